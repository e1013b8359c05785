"""The streaming server of ``k8sx runtime serve``: the HTTP endpoint that Exec, Attach and PortForward
hand out URLs of, as kubelet expects of a runtime.

Why a server of its own: the CRI only *returns a URL*; kubelet (or crictl) then connects to it and
upgrades the HTTP request to SPDY/3.1 or WebSocket. Each URL carries a one-time token for a request
cached here (``/exec/<token>``, ``/attach/<token>``, ``/portforward/<token>``); a token works once and
expires after :data:`TOKEN_TTL`, as in kubelet's streaming server. It listens on loopback by default
(``stream_address`` / ``--stream-address``): a token is the only credential, so exposing it wider is
the operator's choice.

Each connection is served by a thread of a :class:`ThreadingTCPServer`; a session adds a reader thread
for the transport and pumps for stdin/resize, all of which end with the session.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import queue
import secrets
import socket
import socketserver
import threading
import time
from typing import Any

from k8sx.cri.streaming import portforward, remotecommand, spdy, websocket
from k8sx.errors import K8sxError

log = logging.getLogger("k8sx.cri.streaming")

TOKEN_TTL = 60.0
STREAM_CREATION_TIMEOUT = 30.0
DEFAULT_ADDRESS = "127.0.0.1:0"


class TokenCache:
    """One-time, expiring tokens for cached requests."""

    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Any]] = {}

    def put(self, item: Any) -> str:
        token = secrets.token_urlsafe(12)
        now = time.monotonic()
        with self._lock:
            for t in [t for t, (exp, _) in self._items.items() if exp < now]:
                del self._items[t]
            self._items[token] = (now + self.ttl, item)
        return token

    def take(self, token: str) -> Any | None:
        with self._lock:
            exp, item = self._items.pop(token, (0.0, None))
        return item if exp >= time.monotonic() else None


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise K8sxError(f"stream address {address!r}: expected HOST:PORT (port 0 picks a free one)")
    return host.strip("[]") or "127.0.0.1", int(port)


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first protocol in the client's order that we support; "" if the client named none."""
    names = [p.strip() for value in offered for p in value.split(",") if p.strip()]
    if not names:
        return ""
    for name in names:
        if name in supported:
            return name
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    rbufsize = 0   # unbuffered: no byte after the headers may be swallowed before the upgrade
    protocol_version = "HTTP/1.1"
    timeout = 30   # for the request itself; an upgraded session has none (it may idle for hours)
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _fail(self, code: int, message: str) -> None:
        body = message.encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _serve(self) -> None:
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            self._fail(404, "not found")
            return
        target = self.server.owner.tokens.take(parts[1])
        kind = parts[0]
        if target is None or (kind == "portforward") != isinstance(target, portforward.PortForwardTarget) or (
                kind != "portforward" and target.kind != kind):
            self._fail(404, "unknown or expired token")
            return
        upgrade = (self.headers.get("Upgrade") or "").lower()
        self.connection.settimeout(None)
        if upgrade == "websocket":
            self._websocket(kind, target)
        elif upgrade.startswith("spdy/3.1"):
            self._spdy(kind, target)
        else:
            self._fail(400, "unable to upgrade: the request must ask for SPDY/3.1 or websocket")

    def _spdy(self, kind: str, target: Any) -> None:
        supported = (portforward.PROTOCOL,) if kind == "portforward" else remotecommand.SPDY_PROTOCOLS
        protocol = negotiate(self.headers.get_all("X-Stream-Protocol-Version") or [], supported)
        if protocol is None:
            self._fail(403, f"unable to upgrade: no common protocol (supported: {', '.join(supported)})")
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "SPDY/3.1")
        if protocol:
            self.send_header("X-Stream-Protocol-Version", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        arrivals: queue.Queue[spdy.Stream] = queue.Queue()

        def on_stream(stream: spdy.Stream) -> None:
            with contextlib.suppress(OSError):
                stream.conn.reply(stream)
            arrivals.put(stream)

        conn = spdy.Connection(self.connection, server=True, on_stream=on_stream)
        conn.start()
        pumps: list[threading.Thread] = []
        try:
            if kind == "portforward":
                portforward.serve(conn, arrivals, target)
                return
            protocol = protocol or remotecommand.V1
            need = remotecommand.expected_channels(target, protocol)
            channels: dict[str, Any] = {}
            deadline = time.monotonic() + STREAM_CREATION_TIMEOUT
            while need - channels.keys():
                left = deadline - time.monotonic()
                if left <= 0 or conn.closed.is_set():
                    log.info("%s: the client did not open the streams %s", kind, sorted(need - channels.keys()))
                    return
                try:
                    stream = arrivals.get(timeout=min(left, 0.5))
                except queue.Empty:
                    continue
                name = stream.header("streamtype")
                if name in need:
                    channels[name] = stream
                else:
                    stream.cancel()
            pumps = remotecommand.run_session(channels, target, protocol, conn.closed)
        finally:
            conn.close()
        for p in pumps:
            p.join(5)

    def _websocket(self, kind: str, target: Any) -> None:
        key = self.headers.get("Sec-WebSocket-Key") or ""
        if kind == "portforward":
            self._fail(400, "port-forward over websocket is not supported: use SPDY/3.1")
            return
        protocol = negotiate(self.headers.get_all("Sec-WebSocket-Protocol") or [], remotecommand.WEBSOCKET_PROTOCOLS)
        if not key or not protocol:
            self._fail(400, "websocket: a Sec-WebSocket-Key and one of the protocols "
                            f"{', '.join(remotecommand.WEBSOCKET_PROTOCOLS)} are required")
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket.accept_key(key))
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        need = remotecommand.expected_channels(target, protocol)
        conn = websocket.WSConnection(self.connection, protocol, use=need)
        conn.start()
        pumps: list[threading.Thread] = []
        try:
            channels = {name: conn.channel(name) for name in need}
            pumps = remotecommand.run_session(channels, target, protocol, conn.closed)
        finally:
            conn.close()
        for p in pumps:
            p.join(5)


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: StreamServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("streaming connection from %s", client_address)


class StreamServer:
    """``start()`` it, register requests with :meth:`url`, ``stop()`` it."""

    def __init__(self, address: str = DEFAULT_ADDRESS) -> None:
        self.address = address
        self.tokens = TokenCache()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> None:
        host, port = parse_address(self.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        cls = type("_Srv", (_HTTPServer,), {"address_family": family})
        try:
            httpd = cls((host, port), _Handler)
        except OSError as e:
            raise K8sxError(f"streaming server: cannot listen on {self.address}: {e.strerror}") from e
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="stream-server", daemon=True)
        self._thread.start()
        log.info("streaming server on %s", self.base_url)

    def url(self, kind: str, target: Any) -> str:
        if self._httpd is None:
            raise K8sxError("the streaming server is not running")
        return f"{self.base_url}/{kind}/{self.tokens.put(target)}"

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None
