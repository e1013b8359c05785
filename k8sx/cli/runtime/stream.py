"""The terminal side of ``exec``/``attach`` without ``-s``: local stdin/stdout/stderr bridged to a
streaming URL, the local terminal in raw mode with its size followed (SIGWINCH) when ``-t``.

Why in the CLI: raw mode, signal handlers and the process's own fds are the command's business; the
protocol work is k8sx.cri.streaming.client's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator


def _sizes(changed: threading.Event, done: threading.Event) -> Iterator[tuple[int, int]]:
    last = (0, 0)
    while not done.is_set():
        size = shutil.get_terminal_size((0, 0))
        if (size.columns, size.lines) != last and size.columns > 0:
            last = (size.columns, size.lines)
            yield last
        changed.wait(1.0)
        changed.clear()


def run(url: str, stdin: bool, tty: bool) -> int:
    """Stream the session at ``url`` on this process's stdio; the remote command's exit code."""
    from k8sx.cri.streaming.client import stream_command

    in_fd, out_fd, err_fd = sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()
    saved = None
    changed, done = threading.Event(), threading.Event()
    previous = None
    if tty and os.isatty(in_fd):
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(in_fd)
        ttymod.setraw(in_fd)
        previous = signal.signal(signal.SIGWINCH, lambda *_: changed.set())

    def write(fd: int) -> object:
        def w(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        return w

    try:
        return stream_command(url, stdin=(lambda: os.read(in_fd, 32768)) if stdin else None,
                              stdout=write(out_fd), stderr=write(err_fd),  # type: ignore[arg-type]
                              tty=tty, sizes=_sizes(changed, done) if tty else None)
    finally:
        done.set()
        changed.set()
        if saved is not None:
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
