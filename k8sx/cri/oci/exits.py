"""Notice a container's end the moment conmon writes its exit file, without asking runc or polling each container.

Why: the CRI's CONTAINER_STOPPED event (kubelet's evented PLEG) must come when the container ends,
not when a client next happens to ask for its status. conmon writes ``<exit dir>/<id>`` when the
container's init is reaped (in place or through a temporary file renamed over it, depending on its
version), so one inotify watch on the exit dir (IN_CLOSE_WRITE, IN_MOVED_TO) reports every exit of
every container, whichever server instance started it. inotify is called through ctypes (libc has
the three calls; no package needed); where it cannot be had, the dir is listed every
``POLL_FALLBACK`` seconds instead.

:class:`ExitWatcher` runs one daemon thread that calls ``on_exit(container_id)`` for each exit file
written. ``on_exit`` returns False when it cannot handle the exit yet (the container is busy); the
id is then offered again every ``RETRY`` seconds until it returns True. ``close()`` ends the thread
and closes the inotify descriptor: nothing is left once it returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import struct
import threading
from collections.abc import Callable

log = logging.getLogger("k8sx.cri.oci.exits")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name, NUL padded)
TICK = 0.2  # how often the thread looks at its stop flag
RETRY = 0.05  # how soon an exit that on_exit could not take yet is offered again
POLL_FALLBACK = 0.5


def _inotify(path: str) -> int:
    """An inotify fd watching ``path`` for files written or renamed into it; -1 when inotify is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    except (OSError, AttributeError):
        return -1
    if fd < 0:
        return -1
    if libc.inotify_add_watch(fd, path.encode(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
        log.warning("inotify on %s: %s; polling instead", path, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return -1
    return fd


def _names(buf: bytes) -> list[str]:
    out = []
    off = 0
    while off + _EVENT.size <= len(buf):
        _wd, _mask, _cookie, length = _EVENT.unpack_from(buf, off)
        off += _EVENT.size
        name = buf[off:off + length].rstrip(b"\0").decode(errors="replace")
        off += length
        if name:
            out.append(name)
    return out


class ExitWatcher:
    """One thread reporting each exit file written in ``exit_dir`` to ``on_exit(container_id) -> handled``."""

    def __init__(self, exit_dir: str, on_exit: Callable[[str], bool]) -> None:
        self.dir = exit_dir
        self.on_exit = on_exit
        self._stop = threading.Event()
        self._fd = -1
        self._seen: set[str] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> ExitWatcher:
        """Watch from now on: files written after this returns are reported (the first listing, without
        inotify, is taken here too, not in the thread)."""
        self._fd = _inotify(self.dir)
        if self._fd < 0:
            self._seen = self._listing()
        self._thread = threading.Thread(target=self._run, name="k8sx-exits", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _listing(self) -> set[str]:
        try:
            return set(os.listdir(self.dir))
        except OSError:
            return set()

    def _run(self) -> None:
        pending: set[str] = set()
        seen = self._seen
        while not self._stop.is_set():
            fresh: list[str] = []
            if self._fd >= 0:
                ready, _, _ = select.select([self._fd], [], [], RETRY if pending else TICK)
                if ready:
                    with contextlib.suppress(BlockingIOError):
                        fresh = _names(os.read(self._fd, 65536))
            else:
                self._stop.wait(RETRY if pending else POLL_FALLBACK)
                now = self._listing()
                fresh = sorted(now - seen)
                seen = now
            # conmon may write through a temporary "<id>.XXXXXX" renamed to "<id>": the id is the part before a dot
            pending.update(name.split(".", 1)[0] for name in fresh if not name.startswith("."))
            for cid in sorted(pending):
                try:
                    handled = self.on_exit(cid)
                except Exception:
                    log.exception("handling the exit of %s", cid)
                    handled = True
                if handled:
                    pending.discard(cid)
