"""Layer unpacking: THE security boundary between an image from the internet and the host.

A layer is a tar stream written by someone else. Every path is resolved *inside* the destination with
directory file descriptors, never with string joins on the host:

* ``..`` components in an entry name or a hardlink target: the layer is refused (:class:`UnsafeLayer`).
* absolute names (``/etc/x``): confined, i.e. taken relative to the layer root, as containerd does.
* symlinks inside the layer are followed only *scoped to the root* (an absolute target or ``..`` at
  the root stays at the root), so "symlink to /, then write through it" lands inside the rootfs; the
  final component is never followed (an entry replaces a symlink, it does not write through it).
* hardlinks may only point at entries of this layer (resolved the same way); a target that does not
  exist in the layer (``/etc/passwd`` of the host) refuses the layer.
* character and block devices are skipped (counted in :attr:`UnpackStats.skipped_devices`): an image
  has no business shipping them; containers get ``/dev`` from the runtime. FIFOs are created.
* whiteouts ``.wh.<name>`` become overlayfs whiteouts (char device 0:0) and ``.wh..wh..opq`` sets
  ``trusted.overlay.opaque=y`` on its directory; both resolve inside the root like any entry.
* ownership, modes (setuid included, applied after chown), mtimes and the ``user.*`` and
  ``security.capability`` xattrs are kept; other xattrs (``trusted.*`` could forge overlay metadata,
  ``security.selinux`` is host policy) are dropped.

The uncompressed stream is hashed on the way and compared with the config's diff id.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from k8sx.cri.images.errors import DigestMismatch, ImageError, UnsafeLayer

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
KEPT_XATTR_PREFIXES = ("user.", "security.capability")
MAX_SYMLINK_HOPS = 40
CHUNK = 1 << 20
_FD_CACHE_MAX = 512
GUNZIP_CHUNK = 256 << 10
TAR_BLOCK = 32 << 10  # tarfile copies its whole buffer on every small read: keep it modest


@dataclass
class UnpackStats:
    """What an unpack did: entries written, whiteouts applied, devices skipped, and the diff id."""

    entries: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    dropped_xattrs: int = 0
    diff_id: str = ""
    size: int = 0


class _HashingReader:
    """Reads the uncompressed tar stream and hashes every byte (the diff id)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Gunzip:
    """gzip decompression in large chunks (``gzip.GzipFile`` feeds zlib 8 KiB at a time), members concatenated."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.z = zlib.decompressobj(31)
        self.buf = bytearray()
        self.eof = False

    def _fill(self, want: int) -> None:
        while len(self.buf) < want and not self.eof:
            bound = max(want - len(self.buf), CHUNK)
            if self.z.eof:  # end of one gzip member: another may follow (pigz, concatenated streams)
                rest = self.z.unused_data.lstrip(b"\x00") or self.raw.read(GUNZIP_CHUNK).lstrip(b"\x00")
                if not rest:
                    self.eof = True
                    break
                self.z = zlib.decompressobj(31)
                self.buf += self.z.decompress(rest, bound)
                continue
            chunk = self.z.unconsumed_tail or self.raw.read(GUNZIP_CHUNK)
            if not chunk:
                raise EOFError("the compressed layer ends inside its gzip stream")
            self.buf += self.z.decompress(chunk, bound)

    def close(self) -> None:
        self.buf.clear()

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            while not self.eof:
                self._fill(len(self.buf) + CHUNK)
            n = len(self.buf)
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class _Unzstd:
    """zstd decompression through the ``zstd`` command (package zstd): no Python binding is needed."""

    def __init__(self, raw: BinaryIO) -> None:
        exe = shutil.which("zstd")
        if not exe:
            raise ImageError("zstd-compressed layer: the zstd command is missing (apt-get install zstd)")
        os.lseek(raw.fileno(), 0, os.SEEK_SET)  # the buffered sniffing read moved the fd; zstd reads the fd
        self.proc = subprocess.Popen([exe, "-dcq"], stdin=raw.fileno(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.out = self.proc.stdout

    def read(self, n: int = -1) -> bytes:
        data = self.out.read(n)
        if not data and n != 0:
            err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
            if self.proc.wait() != 0:
                raise EOFError(f"zstd: {err or 'corrupt stream'}")
        return data

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def decompressed(f: BinaryIO) -> BinaryIO:
    """The uncompressed stream of layer file ``f``, sniffing gzip / zstd / plain tar by magic bytes."""
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return _Gunzip(f)  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return _Unzstd(f)  # type: ignore[return-value]
    return f


def clean_parts(name: str, what: str = "entry") -> list[str]:
    """Split a tar name into components; absolute names are confined, ``..`` refuses the layer."""
    parts: list[str] = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            raise UnsafeLayer(f"layer {what} {name!r} contains '..': refusing the layer")
        if "\x00" in p:
            raise UnsafeLayer(f"layer {what} {name!r} contains a NUL byte")
        parts.append(p)
    return parts


class _Root:
    """Resolves paths inside one directory through dir fds (openat), following symlinks scoped to it."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._cache: dict[tuple[str, ...], tuple[int, tuple[str, ...]]] = {}
        self._setgid: dict[int, bool] = {}
        self.ids = (os.geteuid(), os.getegid())
        self.umask = _umask()

    def close(self) -> None:
        self.invalidate()
        os.close(self.fd)

    def invalidate(self) -> None:
        for fd, _ in self._cache.values():
            os.close(fd)
        self._cache.clear()
        self._setgid.clear()

    def owned_as(self, pfd: int, uid: int, gid: int) -> bool:
        """True when a file created in ``pfd`` already gets ``uid:gid`` (ours, and no setgid parent)."""
        if (uid, gid) != self.ids:
            return False
        sg = self._setgid.get(pfd)
        if sg is None:
            sg = self._setgid[pfd] = bool(os.fstat(pfd).st_mode & stat.S_ISGID)
        return not sg

    def dir(self, parts: list[str], create: bool) -> tuple[int, tuple[str, ...]]:
        """The fd of directory ``parts`` (borrowed: do not close) and its real path inside the root."""
        key = tuple(parts)
        hit = self._cache.get(key)
        if hit:
            return hit
        fd, real = self._walk(parts, create)
        if len(self._cache) >= _FD_CACHE_MAX:
            self.invalidate()
        self._cache[key] = (fd, real)
        return fd, real

    def _walk(self, parts: list[str], create: bool) -> tuple[int, tuple[str, ...]]:
        fds = [os.dup(self.fd)]
        names: list[str] = []
        todo = list(parts)
        hops = 0
        try:
            while todo:
                comp = todo.pop(0)
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if len(fds) > 1:
                        os.close(fds.pop())
                        names.pop()
                    continue
                cur = fds[-1]
                try:
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise UnsafeLayer(f"too many levels of symlinks resolving {'/'.join(parts)!r}")
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        while len(fds) > 1:
                            os.close(fds.pop())
                        names.clear()
                    todo = target.split("/") + todo
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafeLayer(f"layer path {'/'.join(parts)!r}: {comp!r} is not a directory")
                fds.append(os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur))
                names.append(comp)
            result = fds.pop()
            return result, tuple(names)
        finally:
            for fd in fds:
                os.close(fd)


def _remove(dirfd: int, name: str, keep_dir: bool) -> bool:
    """Remove ``name`` in ``dirfd`` unless it is a directory and ``keep_dir``; True if something went."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return False
        shutil.rmtree(name, dir_fd=dirfd)
    else:
        os.unlink(name, dir_fd=dirfd)
    return True


def _xattrs(member: tarfile.TarInfo, stats: UnpackStats) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if name.startswith(KEPT_XATTR_PREFIXES):
            out.append((name, value.encode("utf-8", "surrogateescape")))
        else:
            stats.dropped_xattrs += 1
    return out


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _apply_meta(fd: int, member: tarfile.TarInfo, stats: UnpackStats, *, set_time: bool = True,
                created_mode: int | None = None, owned: bool = False) -> None:
    """Owner, mode, xattrs, mtime of ``fd``; ``owned``/``created_mode`` skip calls whose result is already there."""
    if not owned:
        os.fchown(fd, member.uid, member.gid)
    if not owned or created_mode != member.mode & 0o7777:
        os.fchmod(fd, member.mode & 0o7777)
    for name, value in _xattrs(member, stats):
        with contextlib.suppress(OSError):
            os.setxattr(fd, name, value)
    if set_time:
        os.utime(fd, ns=(int(member.mtime * 1e9),) * 2)


def unpack_layer(blob_path: str, dest: str, expected_diff_id: str | None = None) -> UnpackStats:
    """Unpack the layer at ``blob_path`` into the (new, private) directory ``dest``, safely.

    Raises :class:`UnsafeLayer` for entries that try to escape, :class:`DigestMismatch` when the
    uncompressed content does not match ``expected_diff_id``. ``dest`` is left half-filled on error;
    the caller owns it and removes it.
    """
    stats = UnpackStats()
    root = _Root(dest)
    dir_times: list[tuple[tuple[str, ...], int]] = []
    try:
        with open(blob_path, "rb") as blob, contextlib.closing(decompressed(blob)) as stream:
            reader = _HashingReader(stream)
            try:
                with tarfile.open(fileobj=reader, mode="r|", errorlevel=2, bufsize=TAR_BLOCK) as tf:  # type: ignore[call-overload]
                    for member in tf:
                        _one(tf, member, root, stats, dir_times)
                reader.drain()
            except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                raise ImageError(f"cannot unpack layer {os.path.basename(blob_path)}: {e}") from e
        root.invalidate()
        for real, mtime_ns in reversed(dir_times):
            with contextlib.suppress(OSError, UnsafeLayer):
                if not real:
                    os.utime(root.fd, ns=(mtime_ns, mtime_ns))
                    continue
                pfd, _ = root.dir(list(real[:-1]), create=False)
                os.utime(real[-1], ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
    finally:
        root.close()
    stats.diff_id = "sha256:" + reader.hash.hexdigest()
    stats.size = reader.size
    if expected_diff_id and stats.diff_id != expected_diff_id:
        raise DigestMismatch(f"layer {os.path.basename(blob_path)}: uncompressed content is {stats.diff_id}, "
                             f"the image config says {expected_diff_id}")
    return stats


def _one(tf: tarfile.TarFile, m: tarfile.TarInfo, root: _Root, stats: UnpackStats,
         dir_times: list[tuple[tuple[str, ...], int]]) -> None:
    parts = clean_parts(m.name)
    if not parts:
        if m.isdir():  # "./" itself: keep the root's metadata from the layer
            _apply_meta(root.fd, m, stats, set_time=False)
            dir_times.append(((), int(m.mtime * 1e9)))
        return
    base = parts[-1]
    pfd, preal = root.dir(parts[:-1], create=True)
    stats.entries += 1

    if base.startswith(WHITEOUT_PREFIX):
        if base == OPAQUE:
            os.setxattr(pfd, OVERLAY_OPAQUE_XATTR, b"y")
            stats.whiteouts += 1
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk etc.): nothing to apply
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", "..") or "/" in target:
            raise UnsafeLayer(f"whiteout {m.name!r} names no valid entry")
        if _remove(pfd, target, keep_dir=False):
            root.invalidate()
            pfd, preal = root.dir(parts[:-1], create=True)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        stats.whiteouts += 1
        return

    if m.ischr() or m.isblk():
        stats.skipped_devices += 1
        stats.entries -= 1
        return

    if m.isdir():
        if _remove(pfd, base, keep_dir=True):
            root.invalidate()
            pfd, preal = root.dir(parts[:-1], create=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o700, dir_fd=pfd)
        dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            _apply_meta(dfd, m, stats, set_time=False)
        finally:
            os.close(dfd)
        if m.mode & stat.S_ISGID:
            root.invalidate()  # cached "no setgid parent" answers may be stale now
        dir_times.append(((*preal, base), int(m.mtime * 1e9)))
        return

    if m.islnk():
        tparts = clean_parts(m.linkname, "hardlink target")
        if not tparts:
            raise UnsafeLayer(f"hardlink {m.name!r} points at the root directory")
        try:
            tfd, _ = root.dir(tparts[:-1], create=False)
            tst = os.stat(tparts[-1], dir_fd=tfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise UnsafeLayer(f"hardlink {m.name!r} -> {m.linkname!r}: the target is not in this layer") from e
        if stat.S_ISDIR(tst.st_mode):
            raise UnsafeLayer(f"hardlink {m.name!r} -> {m.linkname!r}: the target is a directory")
        if tfd == pfd and tparts[-1] == base:
            return
        if _remove(pfd, base, keep_dir=False):
            root.invalidate()
            pfd, _ = root.dir(parts[:-1], create=True)
            tfd, _ = root.dir(tparts[:-1], create=False)
        os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        return

    if m.isreg():
        _regular(tf, m, root, parts, pfd, stats)
        return

    if _remove(pfd, base, keep_dir=False):
        root.invalidate()
        pfd, preal = root.dir(parts[:-1], create=True)

    if m.issym():
        os.symlink(m.linkname, base, dir_fd=pfd)
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, ns=(int(m.mtime * 1e9),) * 2, dir_fd=pfd, follow_symlinks=False)
        return
    if m.isfifo():
        os.mkfifo(base, 0o600, dir_fd=pfd)
        fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            _apply_meta(fd, m, stats)
        finally:
            os.close(fd)
        return
    stats.entries -= 1  # other types (contiguous files, GNU extensions tarfile did not fold): ignored


def _regular(tf: tarfile.TarFile, m: tarfile.TarInfo, root: _Root, parts: list[str], pfd: int,
             stats: UnpackStats) -> None:
    """Create a regular file (replacing whatever is at its name, never writing through it) and fill it."""
    base = parts[-1]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    perm = m.mode & 0o777
    try:
        fd = os.open(base, flags, perm, dir_fd=pfd)
    except FileExistsError:
        _remove(pfd, base, keep_dir=False)
        root.invalidate()
        pfd, _ = root.dir(parts[:-1], create=True)
        fd = os.open(base, flags, perm, dir_fd=pfd)
    try:
        src = tf.extractfile(m)
        if src is not None:
            while True:
                data = src.read(CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        _apply_meta(fd, m, stats, created_mode=perm & ~root.umask, owned=root.owned_as(pfd, m.uid, m.gid))
    finally:
        os.close(fd)

