"""Content store: blobs addressed by digest, written atomically and downloaded once.

A blob appears under ``blobs/sha256/<hex>`` only after it was fully written to ``ingest/``, hashed,
verified, fsync'ed and renamed, so a reader never sees a partial blob. Each digest has a lock file
taken with ``flock``: two pulls of one image (threads or processes) serialise per blob and the second
finds the blob already there. Ingest files whose lock is free belong to a dead writer and are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO

from k8sx.cri.images.errors import DigestMismatch
from k8sx.cri.images.reference import validate_digest


@contextlib.contextmanager
def flocked(path: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold ``flock`` on ``path`` (created if absent); yields False when non-blocking and busy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            op |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    """Blobs under ``<root>/blobs/sha256``; ``ingest/`` holds in-flight writes, ``locks/`` the per-digest locks."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blob_dir = os.path.join(root, "blobs", "sha256")
        self.ingest_dir = os.path.join(root, "ingest")
        self.lock_dir = os.path.join(root, "locks")
        for d in (self.blob_dir, self.ingest_dir, self.lock_dir):
            os.makedirs(d, exist_ok=True)

    def path(self, digest: str) -> str:
        validate_digest(digest)
        return os.path.join(self.blob_dir, digest.split(":", 1)[1])

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def lock_path(self, digest: str) -> str:
        return os.path.join(self.lock_dir, "blob-" + validate_digest(digest).split(":", 1)[1])

    def read(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as f:
            return f.read()

    def ensure(
        self, digest: str, writer: Callable[[BinaryIO], None], size: int | None = None
    ) -> tuple[str, bool]:
        """Make sure blob ``digest`` is present, calling ``writer(file)`` to produce it if not.

        Returns ``(path, fetched)``; ``fetched`` is False when the blob was already there (maybe
        written meanwhile by a concurrent pull that held the lock). The content is verified against
        ``digest`` (and ``size``) before it becomes visible; a mismatch raises :class:`DigestMismatch`.
        """
        final = self.path(digest)
        if os.path.exists(final):
            return final, False
        with flocked(self.lock_path(digest)):
            if os.path.exists(final):
                return final, False
            tmp = os.path.join(self.ingest_dir, f"{digest.split(':', 1)[1]}.{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as raw:
                    hw = _HashingWriter(raw)
                    writer(hw)  # type: ignore[arg-type]
                    raw.flush()
                    os.fsync(raw.fileno())
                got = "sha256:" + hw.hash.hexdigest()
                if got != digest:
                    raise DigestMismatch(f"content of {digest} hashed to {got}: refusing it")
                if size is not None and hw.size != size:
                    raise DigestMismatch(f"content of {digest} is {hw.size} bytes, the descriptor says {size}")
                os.rename(tmp, final)
                fsync_dir(self.blob_dir)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return final, True

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (verified against ``digest`` if given); returns its digest."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        self.ensure(digest, lambda f: f.write(data), len(data))
        return digest

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def all(self) -> list[str]:
        return ["sha256:" + n for n in os.listdir(self.blob_dir) if len(n) == 64]

    def clean_ingest(self) -> int:
        """Remove ingest files of writers that died (their digest lock is free); returns how many."""
        removed = 0
        for name in os.listdir(self.ingest_dir):
            hexpart = name.split(".", 1)[0]
            lock = os.path.join(self.lock_dir, "blob-" + hexpart)
            with flocked(lock, blocking=False) as got:
                if got:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.ingest_dir, name))
                        removed += 1
        return removed


class _HashingWriter:
    """A file wrapper that hashes and counts what goes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)
