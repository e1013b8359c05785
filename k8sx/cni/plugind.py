"""The plugin daemon: runs k8sx's CNI plugins for their thin executables over a unix socket.

Why this exists: with the interpreter and pyroute2 already loaded, a plugin call costs only its
netlink and iptables work. Each connection carries one call (see :mod:`k8sx.cni.plugin_client`
for the wire format) and is served in its own thread, which first enters the caller's network
namespace (the descriptor the client passed), so the "host" side of the plugin is the caller's
node namespace, exactly as if the executable had run the plugin itself. Only root (or the
daemon's own user) may connect.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable

from k8sx.cni import skel
from k8sx.cni.plugin_client import DEFAULT_SOCKET, decode_header
from k8sx.cni.types import ERR_DECODING_FAILURE, CNIError
from k8sx.errors import K8sxError
from k8sx.net import ns

_MAX_HEADER = 1 << 20


def _recv_exact(conn: socket.socket, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        data = conn.recv(max(65536, n - len(buf)))
        if not data:
            raise ConnectionError("short read")
        buf.extend(data)
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _read_request(conn: socket.socket) -> tuple[str, dict[str, str], bytes, int]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(fds.itemsize * 4))
    for level, ctype, cdata in ancdata:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if not fds:
        raise ConnectionError("no namespace descriptor attached")
    for extra in fds[1:]:
        os.close(extra)
    try:
        buf = bytearray(data)
        header_len, stdin_len = struct.unpack(">II", _recv_exact(conn, 8, buf))
        if header_len > _MAX_HEADER:
            raise ConnectionError("request header too large")
        module, env = decode_header(_recv_exact(conn, header_len, buf))
        stdin = _recv_exact(conn, stdin_len, buf)
    except BaseException:
        os.close(fds[0])
        raise
    return module, env, stdin, fds[0]


def _allowed(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.getuid())


def handle(conn: socket.socket) -> None:
    """Serve one call: enter the caller's namespace, run the plugin, answer status + stdout."""
    with conn:
        if not _allowed(conn):
            return
        try:
            module, env, stdin, nsfd = _read_request(conn)
        except (OSError, ValueError, ConnectionError) as exc:
            err = CNIError(ERR_DECODING_FAILURE, "bad request to the k8sx plugin daemon", str(exc))
            conn.sendall(struct.pack(">i", 1) + skel.encode(err.to_dict()))
            return
        try:
            with ns.entered(nsfd):
                out, rc = skel.run(module, env, stdin)
        finally:
            os.close(nsfd)
        conn.sendall(struct.pack(">i", rc) + out)


def serve(path: str = DEFAULT_SOCKET, ready: Callable[[], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Listen on ``path`` (mode 0600) and serve until ``stop`` is set (or forever)."""
    skel.preload()
    os.makedirs(os.path.dirname(path) or ".", 0o755, exist_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old = os.umask(0o177)
        try:
            srv.bind(path)
        finally:
            os.umask(old)
        srv.listen(128)
    except OSError as exc:
        srv.close()
        raise K8sxError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    srv.settimeout(0.5)
    if ready is not None:
        ready()
    try:
        while stop is None or not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    finally:
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
