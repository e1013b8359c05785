"""The body of every k8sx plugin executable: a thin client of the plugin daemon (stdlib only).

Why this exists: a CNI plugin is exec'ed once per call, and a Python interpreter that imports
pyroute2 needs ~200 ms before doing anything. The executables therefore start with ``python -I -S``
and import only this module, which forwards the call (CNI_* environment, stdin, and a descriptor
of the caller's network namespace) to ``k8sx cni plugind`` over a unix socket and prints its
answer. When no daemon listens, the call runs in this process through :mod:`k8sx.cni.skel` (the
slow but complete path), so a plugin always works. ``plugin_client.c`` is the same client in C
(~1 ms start-up); installed executables name it in their ``#!`` line when a compiler was there.

Wire format (one request per connection), chosen so the client needs neither ``json`` nor
``socket`` (they pull in ``re``, ``enum`` and ``selectors``: ~10 ms of start-up): the client sends
two 4-byte big-endian lengths, a header of NUL-separated fields (the module, then ``KEY=VALUE``
for each environment variable), then the stdin bytes, with a descriptor of its network namespace
attached (SCM_RIGHTS) to the first chunk. The daemon answers with a 4-byte exit status and the
stdout bytes, then closes the connection.
"""

from __future__ import annotations

import _socket
import os
import struct
import sys

SOCKET_ENV = "K8SX_CNI_PLUGIND_SOCKET"
DEFAULT_SOCKET = "/run/k8sx/cni-plugind.sock"


def socket_path(env: dict[str, str] | os._Environ[str]) -> str:
    return env.get(SOCKET_ENV) or DEFAULT_SOCKET


def encode_request(module: str, env: dict[str, str], stdin: bytes) -> bytes:
    header = "\0".join([module, *(f"{k}={v}" for k, v in env.items())]).encode("utf-8", "surrogateescape")
    return struct.pack(">II", len(header), len(stdin)) + header + stdin


def decode_header(header: bytes) -> tuple[str, dict[str, str]]:
    fields = header.decode("utf-8", "surrogateescape").split("\0")
    env = {}
    for item in fields[1:]:
        key, _, value = item.partition("=")
        env[key] = value
    return fields[0], env


def _error(code: int, msg: str, details: str) -> bytes:
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (f'{{\n    "cniVersion": "1.1.0",\n    "code": {code},\n    "msg": {q(msg)},\n'
            f'    "details": {q(details)}\n}}\n').encode()


def _call(path: str, module: str, env: dict[str, str], stdin: bytes) -> tuple[bytes, int] | None:
    """Forward one call to the daemon; None if no daemon accepts it (the caller falls back)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        data = encode_request(module, env, stdin)
        nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", nsfd))])
        finally:
            os.close(nsfd)
        while sent < len(data):
            sent += sock.send(data[sent:])
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    reply = b"".join(chunks)
    if len(reply) < 4:  # the daemon died mid-call: do not run the call a second time here
        return _error(11, "the k8sx plugin daemon closed the connection", path), 1
    return reply[4:], struct.unpack(">i", reply[:4])[0]


def main(module: str) -> None:
    """Run plugin ``module`` for this process's CNI call and exit with its status."""
    stdin = sys.stdin.buffer.read()
    env = dict(os.environ)
    answer = _call(socket_path(env), module, env, stdin)
    if answer is None:  # no daemon: run the plugin here, with the full site (pyroute2)
        import site

        site.main()
        try:
            from k8sx.cni import skel
        except ImportError as exc:  # this interpreter lacks k8sx's dependencies (pyroute2)
            sys.stdout.buffer.write(_error(50, f"k8sx plugin unavailable: {exc}",
                                           f"no daemon on {socket_path(env)} and {sys.executable} cannot run it"))
            sys.exit(1)
        out, rc = skel.run(module, env, stdin)
    else:
        out, rc = answer
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    sys.exit(rc)
