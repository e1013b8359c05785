"""SPDY/3.1 framing and a multiplexed connection: what kubelet, crictl and critest speak for exec,
attach and port-forward.

Why our own: Go's clients (client-go's ``spdy`` round tripper over moby/spdystream) upgrade an HTTP
request to ``SPDY/3.1`` and open one SPDY stream per channel (stdin, stdout, stderr, error, resize,
or data+error per forwarded connection). No maintained Python package speaks SPDY, and what is used
of it is small: SYN_STREAM/SYN_REPLY/RST_STREAM/SETTINGS/PING/GOAWAY/HEADERS/WINDOW_UPDATE and DATA
frames, name/value header blocks compressed with one zlib stream per direction primed with the
dictionary of the SPDY/3 draft.

Flow control: spdystream neither sends nor honours WINDOW_UPDATE, so neither do we (received ones
are ignored); TCP's own flow control bounds memory, since a stream's reader blocks the connection's
reader only through a bounded queue per stream.

One :class:`Connection` per socket: a reader thread turns frames into :class:`Stream` events; the
writer side is a lock around ``sendall``. Both ends use the same class (``server=True`` accepts
streams, ``server=False`` opens odd-numbered ones).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
import zlib
from collections.abc import Callable

log = logging.getLogger("k8sx.cri.streaming.spdy")

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5
MAX_FRAME = 1 << 24
DATA_CHUNK = 32 * 1024

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
    "allow authorization cache-control connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status |200 OK| version HTTP/1.1 url public "
    "set-cookie keep-alive origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    """The zlib dictionary of the SPDY/3 draft (section 2.6.10.1): length-prefixed words, then a tail."""
    words = [w.strip("|") for w in _WORDS.replace("|200 OK|", "\0").split()]
    words = [("200 OK" if w == "\0" else w) for w in words]
    out = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    return out + _TAIL.encode()


DICTIONARY = _dictionary()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1."""


def encode_headers(headers: Headers) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n, v = name.lower().encode(), "\0".join(values).encode()
        out.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
    return b"".join(out)


def decode_headers(block: bytes) -> Headers:
    try:
        (count,), pos = struct.unpack_from(">I", block), 4
        out: Headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            out.setdefault(name.lower(), []).extend(value.split("\0"))
        return out
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"bad header block: {e}") from e


def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


class Stream:
    """One SPDY stream: ``read()`` returns chunks then b"" at the peer's FIN (or reset); ``write``/``close``
    send DATA frames and the FIN."""

    def __init__(self, conn: Connection, stream_id: int, headers: Headers) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self._inbox: queue.Queue[bytes] = queue.Queue(maxsize=256)
        self.remote_closed = False
        self.local_closed = False
        self.reset = False
        self.replied = threading.Event()

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower()) or [""]
        return values[0]

    def _feed(self, data: bytes) -> None:
        if self.remote_closed:
            return
        self._inbox.put(data)

    def _eof(self, drop: bool = False) -> None:
        """The peer's side ended. From the reader thread this blocks (like data does) while the consumer
        is behind; ``drop`` (teardown) never blocks: unread data stays readable unless the queue is full."""
        if self.remote_closed:
            return
        self.remote_closed = True
        if not drop:
            self._inbox.put(b"")
            return
        try:
            self._inbox.put_nowait(b"")
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._inbox.get_nowait()
            self._inbox.put_nowait(b"")

    def read(self, timeout: float | None = None) -> bytes:
        """The next chunk; b"" once the peer closed its side (FIN, reset or connection gone)."""
        try:
            data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if not data:
            with contextlib.suppress(queue.Full):
                self._inbox.put_nowait(b"")   # every later read sees the end too
        return data

    def read_all(self) -> bytes:
        chunks = []
        while chunk := self.read():
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        if self.local_closed or self.reset:
            raise BrokenPipeError(f"stream {self.id} is closed")
        view = memoryview(data)
        for i in range(0, len(view), DATA_CHUNK):
            self.conn.send(data_frame(self.id, 0, bytes(view[i:i + DATA_CHUNK])))

    def close(self) -> None:
        """Half-close: send FIN (once)."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        with contextlib.suppress(OSError):
            self.conn.send(data_frame(self.id, FLAG_FIN, b""))

    def cancel(self) -> None:
        if self.reset:
            return
        self.reset = True
        with contextlib.suppress(OSError):
            self.conn.send(control_frame(RST_STREAM, 0, struct.pack(">II", self.id, RST_CANCEL)))
        self._eof(drop=True)


class Connection:
    """A SPDY/3.1 session over a connected socket (the HTTP upgrade is done by the caller)."""

    def __init__(self, sock: socket.socket, server: bool, on_stream: Callable[[Stream], None] | None = None,
                 initial: bytes = b"") -> None:
        self.sock = sock
        self.server = server
        self.on_stream = on_stream
        self.streams: dict[int, Stream] = {}
        self._next_id = 2 if server else 1
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY,
                                         DICTIONARY)
        self._inflate = zlib.decompressobj(15, DICTIONARY)
        self._buf = bytearray(initial)
        self.closed = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._reader = threading.Thread(target=self._read_loop, name="spdy-reader", daemon=True)
        self._reader.start()

    # ---- sending ----

    def send(self, frame: bytes) -> None:
        with self._send_lock:
            if self.closed.is_set():
                raise BrokenPipeError("connection closed")
            self.sock.sendall(frame)

    def _header_block(self, headers: Headers) -> bytes:
        raw = encode_headers(headers)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def open_stream(self, headers: Headers, fin: bool = False) -> Stream:
        """Open a stream (client side); its SYN_REPLY is awaited by ``stream.replied``."""
        with self._send_lock:
            if self.closed.is_set():
                raise BrokenPipeError("connection closed")
            with self._lock:
                sid = self._next_id
                self._next_id += 2
                stream = Stream(self, sid, headers)
                self.streams[sid] = stream
            block = self._header_block(headers)
            payload = struct.pack(">IIBB", sid, 0, 0, 0) + block
            self.sock.sendall(control_frame(SYN_STREAM, FLAG_FIN if fin else 0, payload))
        if fin:
            stream.local_closed = True
        return stream

    def reply(self, stream: Stream) -> None:
        with self._send_lock:
            if self.closed.is_set():
                raise BrokenPipeError("connection closed")
            payload = struct.pack(">I", stream.id) + self._header_block({})
            self.sock.sendall(control_frame(SYN_REPLY, 0, payload))

    def forget(self, *streams: Stream) -> None:
        """Drop finished streams (a long port-forward session opens two per connection)."""
        with self._lock:
            for st in streams:
                self.streams.pop(st.id, None)

    def close(self) -> None:
        """GOAWAY, then close the socket; every stream sees its end."""
        with self._send_lock:
            if not self.closed.is_set():
                with contextlib.suppress(OSError):
                    self.sock.sendall(control_frame(GOAWAY, 0, struct.pack(">II", 0, 0)))
                self.closed.set()
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
        self._end_all()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _end_all(self) -> None:
        with self._lock:
            streams = list(self.streams.values())
        for s in streams:
            s._eof(drop=True)

    # ---- receiving ----

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise EOFError
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_loop(self) -> None:
        try:
            while True:
                head = self._recv_exact(8)
                word, length = struct.unpack(">II", head)
                flags, length = length >> 24, length & 0xFFFFFF
                payload = self._recv_exact(length) if length else b""
                if word & 0x80000000:
                    self._control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload)
                else:
                    self._data(word & 0x7FFFFFFF, flags, payload)
        except (EOFError, OSError):
            pass
        except (ProtocolError, zlib.error, struct.error) as e:
            log.info("spdy: closing on a protocol error: %s", e)
        finally:
            self.closed.set()
            self._end_all()

    def _data(self, sid: int, flags: int, payload: bytes) -> None:
        with self._lock:
            stream = self.streams.get(sid)
        if stream is None:
            return
        if payload:
            stream._feed(payload)
        if flags & FLAG_FIN:
            stream._eof()

    def _control(self, version: int, kind: int, flags: int, payload: bytes) -> None:
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version}")
        if kind == SYN_STREAM:
            sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = decode_headers(self._inflate.decompress(payload[10:]))
            stream = Stream(self, sid, headers)
            with self._lock:
                self.streams[sid] = stream
            if flags & FLAG_FIN:
                stream._eof()
            if self.on_stream is None:
                stream.cancel()
            else:
                self.on_stream(stream)
        elif kind == SYN_REPLY:
            sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            self._inflate.decompress(payload[4:])   # keeps the shared zlib context in step
            with self._lock:
                stream = self.streams.get(sid)
            if stream is not None:
                stream.replied.set()
                if flags & FLAG_FIN:
                    stream._eof()
        elif kind == HEADERS:
            self._inflate.decompress(payload[4:])
        elif kind == RST_STREAM:
            sid = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            with self._lock:
                stream = self.streams.get(sid)
            if stream is not None:
                stream.reset = True
                stream.replied.set()
                stream._eof(drop=True)
        elif kind == PING:
            with contextlib.suppress(OSError):
                self.send(control_frame(PING, 0, payload[:4]))
        elif kind == GOAWAY:
            raise EOFError
        # SETTINGS, WINDOW_UPDATE and unknown kinds: nothing to do
