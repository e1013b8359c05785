"""Reading container logs in the CRI format (``<RFC3339Nano> <stdout|stderr> <F|P> <message>``), as kubelet does.

Why here and not in the CLI: the format is the CRI's contract between the runtime (conmon writes
it) and every reader (``k8sx runtime logs``, tests, kubelet); the parser is one function, and
``follow`` yields records as the file grows, surviving a rotation (ReopenContainerLog) by reopening.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Record:
    timestamp: str
    stream: str  # "stdout" or "stderr"
    partial: bool  # "P": the line continues in the next record
    message: bytes

    @property
    def time_ns(self) -> int:
        return parse_time(self.timestamp)


def parse_time(text: str) -> int:
    """RFC3339Nano (``Z`` or ``+00:00``) -> nanoseconds since the epoch; 0 when unreadable."""
    try:
        head, _, rest = text.partition(".")
        frac = ""
        tz = rest
        if rest:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            frac, tz = rest[:digits], rest[digits:]
        else:
            for sep in ("Z", "+", "-"):
                if sep in head[10:]:
                    i = head.index(sep, 10)
                    head, tz = head[:i], head[i:]
                    break
        dt = datetime.datetime.fromisoformat(head + (tz.replace("Z", "+00:00") or "+00:00"))
        return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
    except ValueError:
        return 0


def parse_line(line: bytes) -> Record | None:
    """One log line (without its newline); None when it is not in the CRI format."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    if len(parts) == 3:
        parts.append(b"")
    tag = parts[2].split(b":")[0]
    return Record(parts[0].decode(errors="replace"), parts[1].decode(), tag == b"P", parts[3])


def read(path: str) -> list[Record]:
    with open(path, "rb") as f:
        return [r for line in f.read().split(b"\n") if line and (r := parse_line(line))]


def follow(path: str, running: Callable[[], bool], poll: float = 0.1) -> Iterator[Record]:
    """Records appended to ``path`` after the current end, until ``running()`` is False and the file is drained."""
    f = open(path, "rb")  # noqa: SIM115 (reopened on rotation)
    f.seek(0, os.SEEK_END)
    buf = b""
    ino = os.fstat(f.fileno()).st_ino
    last_check = 0.0
    alive = True
    try:
        while True:
            chunk = f.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    rec = parse_line(line)
                    if rec is not None:
                        yield rec
                continue
            try:
                if os.stat(path).st_ino != ino:  # rotated: continue in the new file
                    f.close()
                    f = open(path, "rb")  # noqa: SIM115
                    ino = os.fstat(f.fileno()).st_ino
                    continue
            except FileNotFoundError:
                pass
            if not alive:
                return
            now = time.monotonic()
            if now - last_check > 0.5:
                last_check = now
                alive = running()
                if not alive:
                    continue  # one more drain
            time.sleep(poll)
    finally:
        f.close()
