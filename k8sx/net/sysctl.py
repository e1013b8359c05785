"""Per-namespace sysctls (``/proc/sys/net/...``) read and written by the calling thread.

Why this exists: bridge and portmap need ``ip_forward`` and ``route_localnet``. ``/proc/sys/net``
resolves to the network namespace of the thread that opens it, so this works inside
:func:`k8sx.net.ns.entered` without a fork.
"""

from __future__ import annotations

import os


def _path(key: str) -> str:
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def read(key: str) -> str:
    with open(_path(key)) as fh:
        return fh.read().strip()


def write(key: str, value: str) -> None:
    """Set ``key`` (``net.ipv4.ip_forward``) unless it already holds ``value``."""
    try:
        if read(key) == value:
            return
    except OSError:
        pass
    fd = os.open(_path(key), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_iface(family: str, ifname: str, name: str, value: str) -> None:
    """``net.<family>.conf.<ifname>.<name>``; interface names may contain dots, so no dotted key."""
    write(f"net/{family}/conf/{ifname}/{name}", value)
