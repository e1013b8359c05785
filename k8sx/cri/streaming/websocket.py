"""WebSocket (RFC 6455) framing for the ``v4``/``v5.channel.k8s.io`` remotecommand protocols.

Why: kubectl 1.30+ and newer kubelets stream exec/attach over WebSocket instead of SPDY. Each binary
message carries one channel: its first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error,
4 resize), the rest is data. ``v5`` adds a close signal: a message ``[255, channel]`` half-closes that
channel (how a client says its stdin ended). This module turns one upgraded socket into per-channel
objects with the same ``read``/``write``/``close`` as a SPDY stream, so the session code is shared.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import queue
import socket
import struct
import threading
from collections.abc import Collection

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
CLOSE_SIGNAL = 255
CHANNELS = {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}
MAX_MESSAGE = 16 << 20


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bool = False) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    import os

    key = os.urandom(4)
    return head + key + _unmask(key, payload)


def _unmask(key: bytes, data: bytes) -> bytes:
    n = len(data)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ k).to_bytes(n, "big") if n else b""


class WSChannel:
    def __init__(self, conn: WSConnection, num: int) -> None:
        self.conn = conn
        self.num = num
        self._inbox: queue.Queue[bytes] = queue.Queue(maxsize=256)
        self.remote_closed = False
        self.local_closed = False
        self.used = False   # data for a channel nobody reads is dropped, never queued

    def _eof(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            with contextlib.suppress(queue.Full):
                self._inbox.put_nowait(b"")

    def read(self, timeout: float | None = None) -> bytes:
        data = self._inbox.get(timeout=timeout)
        if not data:
            with contextlib.suppress(queue.Full):
                self._inbox.put_nowait(b"")
        return data

    def write(self, data: bytes) -> None:
        if self.local_closed:
            raise BrokenPipeError("channel closed")
        self.conn.send_message(bytes([self.num]) + data)

    def close(self) -> None:
        if self.local_closed:
            return
        self.local_closed = True
        if self.conn.close_signal:
            with contextlib.suppress(OSError):
                self.conn.send_message(bytes([CLOSE_SIGNAL, self.num]))


class WSConnection:
    """Channel-multiplexed WebSocket over an upgraded socket (``client`` masks what it sends)."""

    def __init__(self, sock: socket.socket, protocol: str, client: bool = False,
                 use: Collection[str] | None = None) -> None:
        """``use``: the channels that will be read (data sent on others is dropped); None = all."""
        self.sock = sock
        self.client = client
        self.close_signal = protocol.startswith("v5.")
        self.channels = {n: WSChannel(self, n) for n in CHANNELS.values()}
        for name, num in CHANNELS.items():
            self.channels[num].used = use is None or name in use
        self._send_lock = threading.Lock()
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="ws-reader", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def channel(self, name: str) -> WSChannel:
        return self.channels[CHANNELS[name]]

    def send_message(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        with self._send_lock:
            if self.closed.is_set():
                raise BrokenPipeError("connection closed")
            self.sock.sendall(encode_frame(opcode, payload, mask=self.client))

    def close(self) -> None:
        with self._send_lock:
            if not self.closed.is_set():
                with contextlib.suppress(OSError):
                    self.sock.sendall(encode_frame(OP_CLOSE, struct.pack(">H", 1000), mask=self.client))
                self.closed.set()
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(5)
        for ch in self.channels.values():
            ch._eof()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _read_message(self) -> tuple[int, bytes]:
        parts: list[bytes] = []
        first_op = -1
        while True:
            b0, b1 = self._recv_exact(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._recv_exact(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._recv_exact(8))
            if n > MAX_MESSAGE:
                raise EOFError
            key = self._recv_exact(4) if b1 & 0x80 else b""
            data = self._recv_exact(n)
            if key:
                data = _unmask(key, data)
            if op >= 8:   # control frames may come between fragments
                return op, data
            if first_op < 0:
                first_op = op
            parts.append(data)
            if b0 & 0x80:
                return first_op, b"".join(parts)

    def _read_loop(self) -> None:
        try:
            while True:
                op, data = self._read_message()
                if op == OP_CLOSE:
                    break
                if op == OP_PING:
                    self.send_message(data, OP_PONG)
                    continue
                if op not in (OP_BINARY, OP_TEXT) or not data:
                    continue
                if data[0] == CLOSE_SIGNAL and self.close_signal and len(data) > 1:
                    ch = self.channels.get(data[1])
                    if ch is not None:
                        ch._eof()
                    continue
                ch = self.channels.get(data[0])
                if ch is not None and ch.used and len(data) > 1 and not ch.remote_closed:
                    ch._inbox.put(data[1:])
        except (EOFError, OSError):
            pass
        finally:
            self.closed.set()
            for ch in self.channels.values():
                ch._eof()
