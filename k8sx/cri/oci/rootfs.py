"""A container's root filesystem: an overlay of the image's layers with a writable dir of its own.

Why it exists: every container needs its own copy-on-write view of the (shared, read-only) unpacked
layers, and deleting it must leave no mount behind. overlayfs does this with one mount: the layers as
``lowerdir`` (top first), and a per-container ``upperdir``/``workdir``. mount(2)'s data is capped at
a page, so many layers are passed relative to their common parent (containerd's trick) by running
mount(8) in that dir.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
from dataclasses import dataclass

from k8sx.errors import K8sxError

MNT_DETACH = 2
_PAGE_LIMIT = 4000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass
class Rootfs:
    """The dirs of one container's rootfs under ``base``: merged (the mount), upper, work."""

    base: str

    @property
    def merged(self) -> str:
        return os.path.join(self.base, "rootfs")

    @property
    def upper(self) -> str:
        return os.path.join(self.base, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.base, "work")

    @property
    def empty(self) -> str:
        return os.path.join(self.base, "empty")


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == real for line in f)


def mount(base: str, layers: list[str]) -> Rootfs:
    """Mount ``layers`` (lowest first) with a fresh upper/work dir in ``base``; returns the Rootfs."""
    fs = Rootfs(base)
    for d in (fs.merged, fs.upper, fs.work):
        os.makedirs(d, mode=0o755, exist_ok=True)
    if not layers:
        os.makedirs(fs.empty, exist_ok=True)
        layers = [fs.empty]
    lower = [os.path.abspath(p) for p in reversed(layers)]
    for p in lower:
        if not os.path.isdir(p):
            raise K8sxError(f"image layer {p} is missing")
    opts = f"lowerdir={':'.join(lower)},upperdir={fs.upper},workdir={fs.work}"
    if len(opts) < _PAGE_LIMIT:
        if _libc.mount(b"overlay", fs.merged.encode(), b"overlay", 0, opts.encode()) != 0:
            e = ctypes.get_errno()
            raise K8sxError(f"overlay mount of {fs.merged}: {os.strerror(e)}")
        return fs
    common = os.path.commonpath(lower)
    rel = ":".join(os.path.relpath(p, common) for p in lower)
    opts = f"lowerdir={rel},upperdir={fs.upper},workdir={fs.work}"
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, fs.merged], cwd=common,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise K8sxError(f"overlay mount of {fs.merged}: {r.stderr.strip()}")
    return fs


def unmount(base: str) -> None:
    """Unmount the rootfs in ``base`` (lazily if busy); a missing mount is fine."""
    target = Rootfs(base).merged.encode()
    while os.path.exists(target) and is_mounted(target.decode()):
        if _libc.umount2(target, 0) == 0:
            continue
        e = ctypes.get_errno()
        if e == errno.EBUSY and _libc.umount2(target, MNT_DETACH) == 0:
            continue
        if e in (errno.EINVAL, errno.ENOENT):
            return
        raise K8sxError(f"unmount of {target.decode()}: {os.strerror(e)}")


def usage(path: str) -> tuple[int, int]:
    """(bytes, inodes) used by the files under ``path`` (the writable layer), not following links."""
    total = inodes = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            total += st.st_blocks * 512
    return total, inodes
