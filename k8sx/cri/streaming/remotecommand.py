"""The remotecommand protocols of exec and attach, server side: which channels a session has, how
stdin, output, terminal resizes and the final status travel over them.

Why separate from the transports: SPDY (one stream per channel) and WebSocket (one channel byte per
message) carry the same session. A session is: wait for the channels the request asked for, start
the process, pump stdin and resize messages into it and its output out, then report how it ended on
the error channel -- for ``v4``/``v5`` a ``metav1.Status`` JSON (``Success``, or ``Failure`` with reason
``NonZeroExitCode`` and the code as cause ``ExitCode``, which clients turn into their own exit code),
for the older versions the error text alone. If the client goes away the process is stopped (an
exec is killed; an attach just detaches).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("k8sx.cri.streaming")

V1, V2, V3 = "channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io"
V4, V5 = "v4.channel.k8s.io", "v5.channel.k8s.io"
SPDY_PROTOCOLS = (V4, V3, V2, V1)
WEBSOCKET_PROTOCOLS = (V5, V4, V3, V2, V1)


class Channel(Protocol):
    def read(self, timeout: float | None = None) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class Process(Protocol):
    def write_stdin(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def resize(self, width: int, height: int) -> None: ...
    def run(self, out: Callable[[bytes], None], err: Callable[[bytes], None]) -> int | None: ...
    def stop(self) -> None: ...


@dataclass
class CommandTarget:
    """What an exec or attach URL stands for: the requested channels and how to start the process."""

    kind: str   # exec | attach
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    start: Callable[[], Process]
    description: str = ""


def expected_channels(t: CommandTarget, protocol: str) -> set[str]:
    names = {"error"}
    if t.stdin:
        names.add("stdin")
    if t.stdout:
        names.add("stdout")
    if t.stderr and not t.tty:
        names.add("stderr")
    if t.tty and protocol in (V3, V4, V5):
        names.add("resize")
    return names


def status_json(code: int | None, error: str = "", description: str = "") -> bytes:
    """The v4 error-channel message: ``metav1.Status`` as kubelet writes it."""
    if error:
        st: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": error, "reason": "InternalError",
                              "details": {"causes": [{"message": error}]}, "code": 500}
    elif code:
        st = {"metadata": {}, "status": "Failure",
              "message": f"command terminated with non-zero exit code: error executing command {description}, "
                         f"exit code {code}",
              "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
    else:
        st = {"metadata": {}, "status": "Success"}
    return json.dumps(st, separators=(",", ":")).encode()


def error_message(protocol: str, code: int | None, error: str, description: str) -> bytes:
    if protocol in (V4, V5):
        return status_json(code, error, description)
    if error:
        return error.encode()
    if code:
        return f"command terminated with non-zero exit code: exit status {code}".encode()
    return b""


def _pump_stdin(ch: Channel, proc: Process) -> None:
    try:
        while data := ch.read():
            proc.write_stdin(data)
    finally:
        proc.close_stdin()


def parse_sizes(buf: bytes) -> tuple[list[tuple[int, int]], bytes]:
    """Complete ``{"Width":w,"Height":h}`` objects at the front of ``buf`` and the incomplete rest."""
    dec = json.JSONDecoder()
    text = buf.decode(errors="replace")
    sizes = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \r\n\t":
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, end = dec.raw_decode(text, pos)
        except ValueError:
            break
        pos = end
        if isinstance(obj, dict):
            sizes.append((int(obj.get("Width") or 0), int(obj.get("Height") or 0)))
    return sizes, text[pos:].encode()


def _pump_resize(ch: Channel, proc: Process) -> None:
    buf = b""
    while data := ch.read():
        sizes, buf = parse_sizes(buf + data)
        for w, h in sizes:
            proc.resize(w, h)


def _spawn(target: Callable[..., None], *args: Any) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True, name="stream-pump")
    t.start()
    return t


def run_session(channels: dict[str, Channel], target: CommandTarget, protocol: str,
                gone: threading.Event) -> list[threading.Thread]:
    """Run one exec/attach over ``channels`` until the process ends or the client goes (``gone``).

    Returns the stdin/resize pumps: they end once the caller closes the connection; join them then."""
    code: int | None = None
    error = ""
    pumps: list[threading.Thread] = []
    broken = threading.Event()
    try:
        proc = target.start()
    except Exception as e:   # K8sxError and friends: the client gets the reason on the error channel
        log.info("%s: %s", target.kind, e)
        error = str(e)
        proc = None
    if proc is not None:
        finished = threading.Event()

        def watch() -> None:
            while not finished.wait(0.25):
                if gone.is_set() or broken.is_set():
                    proc.stop()
                    return

        def sink(name: str) -> Callable[[bytes], None]:
            ch = channels.get(name)

            def write(data: bytes) -> None:
                if ch is None or broken.is_set():
                    return
                try:
                    ch.write(data)
                except OSError:
                    broken.set()
            return write

        if "stdin" in channels:
            pumps.append(_spawn(_pump_stdin, channels["stdin"], proc))
        if "resize" in channels:
            pumps.append(_spawn(_pump_resize, channels["resize"], proc))
        watcher = _spawn(watch)
        try:
            code = proc.run(sink("stdout"), sink("stderr"))
        except Exception as e:
            log.warning("%s: %s", target.kind, e)
            error = str(e)
        finally:
            finished.set()
            watcher.join()
    for name in ("stdout", "stderr"):
        if name in channels:
            channels[name].close()
    if "error" in channels and not gone.is_set():
        msg = error_message(protocol, code, error, target.description)
        with contextlib.suppress(OSError):
            if msg:
                channels["error"].write(msg)
            channels["error"].close()
    for name in ("stdin", "resize"):
        if name in channels:
            channels[name].close()
    return pumps
