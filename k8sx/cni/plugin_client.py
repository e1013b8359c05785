"""The body of every k8sx plugin executable: a thin client of the plugin daemon (stdlib only).

Why this exists: a CNI plugin is exec'ed once per call, and a Python interpreter that imports
pyroute2 needs ~200 ms before doing anything. The executables therefore start with ``python -I -S``
and import only this module, which forwards the call (CNI_* environment, stdin, and a descriptor
of the caller's network namespace) to ``k8sx cni plugind`` over a unix socket and prints its
answer. When no daemon listens, the call runs in this process through :mod:`k8sx.cni.skel` (the
slow but complete path), so a plugin always works.

Wire format (one request per connection): the client sends a 4-byte big-endian length, a JSON
header ``{"module", "env", "stdin_len"}`` of that length, then the stdin bytes, with the netns fd
attached (SCM_RIGHTS) to the first chunk. The daemon answers with a 4-byte exit status, then the
stdout bytes until it closes the connection.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

SOCKET_ENV = "K8SX_CNI_PLUGIND_SOCKET"
DEFAULT_SOCKET = "/run/k8sx/cni-plugind.sock"


def socket_path(env: dict[str, str] | os._Environ[str]) -> str:
    return env.get(SOCKET_ENV) or DEFAULT_SOCKET


def _call(path: str, module: str, env: dict[str, str], stdin: bytes) -> tuple[bytes, int] | None:
    """Forward one call to the daemon; None if no daemon accepts it (the caller falls back)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        header = json.dumps({"module": module, "env": env, "stdin_len": len(stdin)}).encode()
        nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            first = struct.pack(">I", len(header)) + header
            sock.sendmsg([first], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", nsfd))])
        finally:
            os.close(nsfd)
        if stdin:
            sock.sendall(stdin)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        sock.close()
    reply = b"".join(chunks)
    if len(reply) < 4:  # the daemon died mid-call: do not run the call a second time here
        err = {"cniVersion": "1.1.0", "code": 11, "msg": "the k8sx plugin daemon closed the connection",
               "details": path}
        return json.dumps(err).encode() + b"\n", 1
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
            err = {"cniVersion": "1.1.0", "code": 50, "msg": f"k8sx plugin unavailable: {exc}",
                   "details": f"no daemon on {socket_path(env)} and {sys.executable} cannot run it"}
            sys.stdout.write(json.dumps(err) + "\n")
            sys.exit(1)
        out, rc = skel.run(module, env, stdin)
    else:
        out, rc = answer
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    sys.exit(rc)
