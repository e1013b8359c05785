"""Network namespaces by file descriptor, entered per thread.

Why this exists: pyroute2's ``IPRoute(netns=...)`` forks a helper process to create each socket
(10-15 ms, and it creates the namespace if the path is missing). The kernel lets one *thread*
``setns(2)`` into a network namespace, and a socket stays bound to the namespace it was created
in, so we create netlink sockets (and spawn iptables) from inside a short per-thread switch and
switch straight back. The CNI plugin daemon serves each request in the caller's namespace this way.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc: ctypes.CDLL | None = None


class NetnsNotFound(OSError):
    """The path of a network namespace does not exist (or is not a namespace)."""


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str) -> int:
    """Open a network namespace (``/var/run/netns/x``, ``/proc/PID/ns/net``) and return its fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NetnsNotFound(errno.ENOENT, f"failed to open netns {path!r}: no such file") from exc
    except OSError as exc:
        raise NetnsNotFound(exc.errno, f"failed to open netns {path!r}: {exc.strerror}") from exc
    return fd


def current_fd() -> int:
    """An fd of the calling thread's network namespace (close it when done)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def same_netns(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block with the calling thread inside the namespace ``fd``; always switch back."""
    own = current_fd()
    try:
        _setns(fd)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
