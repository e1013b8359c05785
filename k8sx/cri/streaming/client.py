"""The client side of streaming URLs: what ``k8sx runtime exec -it``, ``attach`` and ``port-forward`` do
with the URL an Exec/Attach/PortForward call returns (ours or containerd's).

Why here, next to the server: the same SPDY connection and WebSocket framing serve both ends. The
client upgrades a POST (SPDY/3.1, as crictl 1.26 and kubelet do) or a GET (WebSocket, ``v5``/``v4``),
opens the channels the request asked for, pumps stdin, terminal sizes and output, and turns the
error channel into an exit code (``NonZeroExitCode`` -> the command's code; any other failure -> a
:class:`~k8sx.errors.K8sxError`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from k8sx.cri.streaming import portforward, remotecommand, spdy, websocket
from k8sx.errors import K8sxError

Reader = Callable[[], bytes]
Writer = Callable[[bytes], None]
CONNECT_TIMEOUT = 10.0


def _upgrade(url: str, method: str, headers: list[tuple[str, str]]) -> tuple[socket.socket, dict[str, list[str]],
                                                                            bytes]:
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http":
        raise K8sxError(f"streaming URL {url!r}: only http:// is supported")
    host, port = u.hostname or "127.0.0.1", u.port or 80
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise K8sxError(f"connecting to the streaming server {host}:{port}: {e.strerror or e}") from e
    path = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {u.netloc}", *(f"{k}: {v}" for k, v in headers),
             "Content-Length: 0", "", ""]
    try:
        sock.sendall("\r\n".join(lines).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise K8sxError("the streaming server closed the connection during the upgrade")
            buf += chunk
            if len(buf) > 65536:
                raise K8sxError("the streaming server's upgrade response is too long")
    except OSError as e:
        sock.close()
        raise K8sxError(f"upgrading the streaming connection: {e}") from e
    except K8sxError:
        sock.close()
        raise
    head, rest = buf.split(b"\r\n\r\n", 1)
    status, *header_lines = head.decode(errors="replace").split("\r\n")
    parts = status.split(" ", 2)
    got: dict[str, list[str]] = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        got.setdefault(k.strip().lower(), []).append(v.strip())
    if len(parts) < 2 or parts[1] != "101":
        sock.close()
        body = rest.decode(errors="replace").strip()
        raise K8sxError(f"the streaming server refused the upgrade: {' '.join(parts[1:])}"
                        + (f": {body}" if body else ""))
    sock.settimeout(None)
    return sock, got, rest


def open_spdy(url: str, protocols: tuple[str, ...]) -> tuple[spdy.Connection, str]:
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
               *(("X-Stream-Protocol-Version", p) for p in protocols)]
    sock, got, rest = _upgrade(url, "POST", headers)
    protocol = (got.get("x-stream-protocol-version") or [""])[0]
    conn = spdy.Connection(sock, server=False, initial=rest)
    conn.start()
    return conn, protocol


def open_websocket(url: str, protocols: tuple[str, ...]) -> tuple[websocket.WSConnection, str]:
    key = base64.b64encode(os.urandom(16)).decode()
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Protocol", ", ".join(protocols))]
    sock, got, _rest = _upgrade(url, "GET", headers)
    if (got.get("sec-websocket-accept") or [""])[0] != websocket.accept_key(key):
        sock.close()
        raise K8sxError("the streaming server answered the websocket upgrade with a wrong accept key")
    protocol = (got.get("sec-websocket-protocol") or [""])[0]
    conn = websocket.WSConnection(sock, protocol, client=True)
    conn.start()
    return conn, protocol


def _exit_code(protocol: str, message: bytes) -> int:
    if not message:
        return 0
    if protocol in (remotecommand.V4, remotecommand.V5):
        try:
            st = json.loads(message)
        except ValueError:
            raise K8sxError(f"error executing remote command: {message.decode(errors='replace')}") from None
        if st.get("status") == "Success":
            return 0
        if st.get("reason") == "NonZeroExitCode":
            for cause in (st.get("details") or {}).get("causes") or []:
                if cause.get("reason") == "ExitCode":
                    with contextlib.suppress(ValueError):
                        return int(cause.get("message", ""))
        raise K8sxError(f"error executing remote command: {st.get('message') or message.decode()}")
    raise K8sxError(f"error executing remote command: {message.decode(errors='replace')}")


def stream_command(url: str, *, stdin: Reader | None, stdout: Writer | None, stderr: Writer | None,
                   tty: bool = False, sizes: Iterator[tuple[int, int]] | None = None,
                   transport: str = "spdy", protocols: tuple[str, ...] | None = None) -> int:
    """Run the exec/attach session at ``url``; returns the exit code (0 for an attach that ended).

    ``stdin()`` is called until it returns b""; ``sizes`` yields terminal sizes (width, height) to send,
    blocking between them, while the session lasts. ``protocols`` narrows what is offered (tests of the
    older versions)."""
    conn: Any
    if transport == "websocket":
        conn, protocol = open_websocket(url, protocols or remotecommand.WEBSOCKET_PROTOCOLS)
    else:
        conn, protocol = open_spdy(url, protocols or remotecommand.SPDY_PROTOCOLS)
        protocol = protocol or remotecommand.V1   # no header: the original channel protocol
    try:
        names = ["error"]
        if stdin is not None:
            names.append("stdin")
        if stdout is not None:
            names.append("stdout")
        if stderr is not None and not tty:
            names.append("stderr")
        if tty and protocol in (remotecommand.V3, remotecommand.V4, remotecommand.V5) and sizes is not None:
            names.append("resize")
        channels: dict[str, Any] = {}
        for name in names:
            if transport == "websocket":
                channels[name] = conn.channel(name)
            else:
                channels[name] = conn.open_stream({"streamtype": [name]})
                if not channels[name].replied.wait(30) or channels[name].reset:
                    raise K8sxError(f"the streaming server did not accept the {name} stream")
        pumps = []

        def pump_in() -> None:
            ch = channels["stdin"]
            try:
                while not conn.closed.is_set():
                    assert stdin is not None
                    data = stdin()
                    if not data:
                        break
                    ch.write(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    ch.close()

        def pump_sizes() -> None:
            ch = channels["resize"]
            assert sizes is not None
            with contextlib.suppress(OSError, StopIteration):
                for w, h in sizes:
                    if conn.closed.is_set():
                        break
                    ch.write(json.dumps({"Width": w, "Height": h}).encode())

        def pump_out(name: str, sink: Writer) -> None:
            ch = channels[name]
            while data := ch.read():
                sink(data)

        if "stdin" in channels:
            threading.Thread(target=pump_in, daemon=True, name="stdin").start()
        if "resize" in channels:
            threading.Thread(target=pump_sizes, daemon=True, name="resize").start()
        for name, sink in (("stdout", stdout), ("stderr", stderr)):
            if name in channels and sink is not None:
                t = threading.Thread(target=pump_out, args=(name, sink), daemon=True, name=name)
                t.start()
                pumps.append(t)
        message = b""
        while chunk := channels["error"].read():
            message += chunk
        for t in pumps:
            t.join()
        return _exit_code(protocol, message)
    finally:
        conn.close()


class PortForwarder:
    """Forwards local TCP connections to ports of a pod through one SPDY connection to ``url``."""

    def __init__(self, url: str, ports: list[tuple[int, int]], address: str = "127.0.0.1",
                 on_error: Callable[[str], None] | None = None) -> None:
        self.conn, protocol = open_spdy(url, (portforward.PROTOCOL,))
        if protocol != portforward.PROTOCOL:
            self.conn.close()
            raise K8sxError(f"the streaming server does not speak {portforward.PROTOCOL} (got {protocol!r})")
        self.on_error = on_error or (lambda msg: None)
        self._request_id = 0
        self._lock = threading.Lock()
        self.listeners: list[tuple[socket.socket, int]] = []
        try:
            for local, remote in ports:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                ls = socket.socket(family, socket.SOCK_STREAM)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((address, local))
                ls.listen(128)
                self.listeners.append((ls, remote))
        except OSError as e:
            self.close()
            raise K8sxError(f"port-forward: cannot listen on {address}: {e.strerror}") from e

    @property
    def bound(self) -> list[tuple[str, int, int]]:
        """(address, local port, remote port) of each listener (a local port 0 is a picked one)."""
        return [(ls.getsockname()[0], ls.getsockname()[1], remote) for ls, remote in self.listeners]

    def serve(self) -> None:
        """Accept and forward until :meth:`close` or the server ends the connection."""
        threads = [threading.Thread(target=self._accept, args=(ls, remote), daemon=True)
                   for ls, remote in self.listeners]
        for t in threads:
            t.start()
        self.conn.closed.wait()
        self.close()

    def _accept(self, ls: socket.socket, remote: int) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client, remote), daemon=True).start()

    def _forward(self, client: socket.socket, remote: int) -> None:
        with self._lock:
            rid = str(self._request_id)
            self._request_id += 1
        base = {"port": [str(remote)], "requestid": [rid]}
        try:
            err = self.conn.open_stream({"streamtype": ["error"], **base}, fin=True)
            data = self.conn.open_stream({"streamtype": ["data"], **base})
        except OSError:
            client.close()
            return

        def errors() -> None:
            msg = err.read_all()
            if msg:
                self.on_error(msg.decode(errors="replace"))

        def up() -> None:
            try:
                while chunk := client.recv(65536):
                    data.write(chunk)
            except OSError:
                pass
            data.close()

        te = threading.Thread(target=errors, daemon=True)
        tu = threading.Thread(target=up, daemon=True)
        te.start()
        tu.start()
        try:
            while chunk := data.read():
                client.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        tu.join()
        client.close()
        te.join(1)
        self.conn.forget(data, err)

    def close(self) -> None:
        for ls, _ in self.listeners:
            with contextlib.suppress(OSError):
                ls.shutdown(socket.SHUT_RDWR)
            ls.close()
        self.conn.close()
