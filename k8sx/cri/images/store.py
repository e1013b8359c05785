"""``ImageStore``: the images a node has, their names, and the content and snapshots they hold.

Metadata lives in SQLite (``<root>/images.db``, WAL): one transaction commits an image with its names,
blobs and snapshots, so an image is either fully there or absent. Removal deletes the rows and then
sweeps: a blob or snapshot that no remaining image references is deleted, so exactly the unshared
parts are freed. Pulls and imports hold ``gc.lock`` shared; the sweep holds it exclusively, so it never
deletes what an in-flight pull just wrote. Opening the store (when nobody else holds the lock) drops
what a killed pull left behind: ingest files, half-built snapshots, and complete blobs/snapshots that
no image references. Several processes may use one root at once (the server and ``k8sx runtime import``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from k8sx.cri.images import registry as reg
from k8sx.cri.images.content import ContentStore, flocked
from k8sx.cri.images.errors import ArchiveError, DigestMismatch, ImageNotFound, InvalidReference, RegistryError
from k8sx.cri.images.reference import Reference, looks_like_reference, parse
from k8sx.cri.images.snapshots import SnapshotStore, chain_ids
from k8sx.cri.images.unpack import unpack_layer

STATE_ROOT = "/var/lib/k8sx"
PARALLEL_LAYERS = 4
LAYER_TYPES = (
    reg.MT_OCI_LAYER, reg.MT_OCI_LAYER_GZIP, reg.MT_DOCKER_LAYER_GZIP, "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, manifest_digest TEXT NOT NULL, size INTEGER NOT NULL, config TEXT NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refs (name TEXT PRIMARY KEY, image_id TEXT NOT NULL, is_digest INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS image_blobs (image_id TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (image_id, digest));
CREATE TABLE IF NOT EXISTS image_snapshots (image_id TEXT NOT NULL, idx INTEGER NOT NULL, chain_id TEXT NOT NULL,
    PRIMARY KEY (image_id, idx));
CREATE TABLE IF NOT EXISTS leases (holder TEXT NOT NULL, idx INTEGER NOT NULL, chain_id TEXT NOT NULL,
    PRIMARY KEY (holder, idx));
"""


def images_dir(state_root: str = STATE_ROOT) -> str:
    """Where the image store lives under k8sx's state root (``--root``): ``<root>/images``."""
    return os.path.join(state_root, "images")


@dataclass
class Auth:
    """Credentials for one pull, shaped like the CRI ``AuthConfig``."""

    username: str = ""
    password: str = ""
    auth: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""


@dataclass
class Image:
    """One image as the CRI reports it: ``id`` is ``sha256:<config digest>``."""

    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    uid: int | None = None
    username: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    pinned: bool = False
    manifest_digest: str = ""


@dataclass
class FsUsage:
    """What ``ImageFsInfo`` reports for the filesystem holding the images."""

    mountpoint: str
    used_bytes: int
    inodes_used: int
    timestamp_ns: int


def _json_doc(body: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object from a registry or archive; anything else is a clear error, not a traceback."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise RegistryError(f"{what} is not JSON") from e
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc


def user_of(config: dict[str, Any]) -> tuple[int | None, str]:
    """CRI's ``uid``/``username`` from the config's ``User`` (``"1000:50"`` -> uid 1000; ``"www-data"`` -> name)."""
    user = ((config.get("config") or {}).get("User") or "").split(":", 1)[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


@dataclass
class _Source:
    """Where an image's blobs come from while installing it: a registry pull or an archive."""

    fetch: Callable[[dict[str, Any], BinaryIO], None]
    tags: list[str]
    digest_names: list[str]
    extra_blobs: list[tuple[str, bytes]]  # (digest, body) of manifests/indexes above the image manifest


class ImageStore:
    """Images under ``root`` (``images_dir(--root)``), pulled with ``registries_config`` (a certs.d directory)."""

    def __init__(self, root: str, registries_config: str | None = None, docker_config: str | None = None,
                 platform: dict[str, str] | None = None) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        # Unpacked layers keep their setuid binaries and may carry secrets: only root may reach them
        # (containerd keeps its snapshot dirs 0700 for the same reason). Overlay mounts are unaffected.
        os.chmod(self.root, 0o700)
        self.content = ContentStore(self.root)
        self.snapshots = SnapshotStore(self.root)
        self.client = reg.RegistryClient(reg.HostsConfig(registries_config), docker_config, platform)
        self._gc_lock = os.path.join(self.root, "locks", "gc")
        self._db_path = os.path.join(self.root, "images.db")
        with self._db() as db:
            db.executescript(SCHEMA)
        self.recover()

    # ---- plumbing --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def recover(self) -> bool:
        """Drop leftovers of killed pulls (if no one else is pulling now); True when it ran."""
        with flocked(self._gc_lock, blocking=False) as got:
            if not got:
                return False
            self.content.clean_ingest()
            self.snapshots.clean_tmp()
            self._sweep()
            self._drop_locks()
            return True

    def _drop_locks(self) -> None:
        """Remove per-digest lock files (only under the exclusive gc lock: no pull can be holding one)."""
        lock_dir = os.path.dirname(self._gc_lock)
        for name in os.listdir(lock_dir):
            if name.startswith(("blob-", "snap-")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(lock_dir, name))

    @contextlib.contextmanager
    def _cleanup_on_failure(self) -> Iterator[None]:
        """After a failed pull/import, drop what it wrote (unless another pull is running: then the next open)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.recover()
            raise

    def _sweep(self) -> None:
        """Delete blobs and snapshots that no image references (caller holds the gc lock exclusively)."""
        with self._db() as db:
            blobs = {r[0] for r in db.execute("SELECT DISTINCT digest FROM image_blobs")}
            snaps = {r[0] for r in db.execute("SELECT chain_id FROM image_snapshots UNION SELECT chain_id FROM leases")}
        for d in self.content.all():
            if d not in blobs:
                self.content.delete(d)
        for c in self.snapshots.all():
            if c not in snaps:
                self.snapshots.delete(c)

    def _image(self, db: sqlite3.Connection, image_id: str) -> Image | None:
        row = db.execute("SELECT id, manifest_digest, size, config, pinned FROM images WHERE id=?",
                         (image_id,)).fetchone()
        if not row:
            return None
        config = json.loads(row[3])
        uid, username = user_of(config)
        tags, digests = [], []
        for name, is_digest in db.execute("SELECT name, is_digest FROM refs WHERE image_id=? ORDER BY name",
                                          (image_id,)):
            (digests if is_digest else tags).append(name)
        return Image(row[0], tags, digests, row[2], uid, username, config, bool(row[4]), row[1])

    def _resolve_id(self, db: sqlite3.Connection, ref_or_id: str) -> str | None:
        text = ref_or_id.strip()
        if not text:
            return None
        hexpart = text[7:] if text.startswith("sha256:") else text
        if len(hexpart) == 64 and _HEX.match(hexpart):
            row = db.execute("SELECT id FROM images WHERE id=?", ("sha256:" + hexpart,)).fetchone()
            if row:
                return row[0]
        if looks_like_reference(text):
            r = parse(text)
            row = db.execute("SELECT image_id FROM refs WHERE name=?",
                             (r.with_digest(r.digest) if r.digest else str(r),)).fetchone()
            if row:
                return row[0]
        if _HEX.match(hexpart):
            rows = db.execute("SELECT id FROM images WHERE id LIKE ?", (f"sha256:{hexpart}%",)).fetchall()
            if len(rows) == 1:
                return rows[0][0]
        return None

    # ---- queries ---------------------------------------------------------------------------------------

    def list(self) -> list[Image]:
        with self._db() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM images ORDER BY created_ns")]
            return [img for i in ids if (img := self._image(db, i))]

    def get(self, ref_or_id: str) -> Image | None:
        """An image by id, id prefix (unambiguous), ``name:tag`` or ``name@digest`` (short names normalised)."""
        with self._db() as db:
            image_id = self._resolve_id(db, ref_or_id)
            return self._image(db, image_id) if image_id else None

    def layers(self, image_id: str) -> list[str]:
        """The image's unpacked layer directories, lowest first (reverse them for overlay's ``lowerdir``).

        Each is ``<root>/snapshots/<chain hex>/fs``. Mount data is capped at one page (4096 bytes): for
        images with many layers mount with ``cwd=self.snapshots.dir`` and relative ``<hex>/fs`` names
        (67 bytes each, about 60 layers), or use fsconfig's ``lowerdir+`` on kernels >= 6.8.
        """
        with self._db() as db:
            resolved = self._resolve_id(db, image_id)
            if not resolved:
                raise ImageNotFound(f"image {image_id!r} not found")
            rows = db.execute("SELECT chain_id FROM image_snapshots WHERE image_id=? ORDER BY idx", (resolved,))
            return [self.snapshots.path(r[0]) for r in rows]

    def lease(self, holder: str, ref_or_id: str) -> list[str]:
        """Keep an image's layers for ``holder`` (a container id) even if the image is removed meanwhile.

        Returns the layer directories, lowest first, as :meth:`layers`. Removing an image a container
        still uses then frees only what no image *and no lease* needs, as containerd's snapshots of
        running containers keep their parents. :meth:`release` ends the lease.
        """
        with flocked(self._gc_lock, shared=True), self._db() as db:
            image_id = self._resolve_id(db, ref_or_id)
            if not image_id:
                raise ImageNotFound(f"image {ref_or_id!r} not found")
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM leases WHERE holder=?", (holder,))
            db.execute("INSERT INTO leases SELECT ?, idx, chain_id FROM image_snapshots WHERE image_id=?",
                       (holder, image_id))
            db.execute("COMMIT")
            rows = db.execute("SELECT chain_id FROM leases WHERE holder=? ORDER BY idx", (holder,))
            return [self.snapshots.path(r[0]) for r in rows]

    def release(self, holder: str) -> None:
        """End ``holder``'s lease; layers no image or other lease uses are freed."""
        with flocked(self._gc_lock), self._db() as db:
            if db.execute("DELETE FROM leases WHERE holder=?", (holder,)).rowcount:
                self._sweep()

    def fs_info(self) -> FsUsage:
        """Bytes and inodes used by the store (hardlinked inodes counted once)."""
        seen: set[tuple[int, int]] = set()
        used = 0
        for top in (self.content.blob_dir, self.snapshots.dir):
            for dirpath, dirnames, filenames in os.walk(top):
                for n in dirnames + filenames:
                    try:
                        st = os.lstat(os.path.join(dirpath, n))
                    except OSError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key not in seen:
                        seen.add(key)
                        used += st.st_blocks * 512
        return FsUsage(self.root, used, len(seen), time.time_ns())

    # ---- changes ---------------------------------------------------------------------------------------

    def set_pinned(self, ref_or_id: str, pinned: bool = True) -> bool:
        """Mark an image pinned (the sandbox image, as containerd does); False when absent."""
        with self._db() as db:
            image_id = self._resolve_id(db, ref_or_id)
            if not image_id:
                return False
            db.execute("UPDATE images SET pinned=? WHERE id=?", (int(pinned), image_id))
            return True

    def remove(self, ref_or_id: str) -> bool:
        """Remove the image (all its names) and free the blobs and snapshots no other image uses."""
        with flocked(self._gc_lock):
            with self._db() as db:
                image_id = self._resolve_id(db, ref_or_id)
                if not image_id:
                    return False
                db.execute("BEGIN IMMEDIATE")
                for table in ("refs", "image_blobs", "image_snapshots"):
                    db.execute(f"DELETE FROM {table} WHERE image_id=?", (image_id,))
                db.execute("DELETE FROM images WHERE id=?", (image_id,))
                db.execute("COMMIT")
            self._sweep()
            self._drop_locks()
        return True

    def pull(self, ref: str, auth: Auth | None = None) -> Image:
        """Pull ``ref`` for this platform, verify every digest, unpack its layers; returns the image."""
        r = parse(ref)
        creds = reg.Credentials.from_auth(auth)
        with self._cleanup_on_failure(), flocked(self._gc_lock, shared=True):
            res = self.client.resolve(r, creds)

            def fetch(desc: dict[str, Any], out: BinaryIO) -> None:
                self.client.fetch_blob(r, res.endpoint, desc["digest"], out, creds)

            extra = [(res.top_digest, res.top_body)] if res.top_digest != res.manifest_digest else []
            source = _Source(fetch, [r.with_tag()] if r.tag and not r.digest else [],
                             [r.with_digest(res.top_digest)], extra)
            return self._install(res.manifest_digest, res.manifest_body, source)

    def _install(self, manifest_digest: str, manifest_body: bytes, source: _Source) -> Image:
        """Fetch config and layers of one image manifest, unpack them, and commit the image (gc lock held)."""
        manifest = _json_doc(manifest_body, f"manifest {manifest_digest}")
        cfg_desc = manifest.get("config") or {}
        if cfg_desc.get("mediaType") not in (reg.MT_OCI_CONFIG, reg.MT_DOCKER_CONFIG, None):
            raise RegistryError(f"not a container image: config media type {cfg_desc.get('mediaType')!r}")
        layers = manifest.get("layers") or []
        for d in layers:
            if d.get("mediaType") not in LAYER_TYPES:
                raise RegistryError(f"unsupported layer media type {d.get('mediaType')!r}")
        for d in (cfg_desc, *layers):
            if not isinstance(d.get("digest"), str) or not _DIGEST.match(d["digest"]):
                raise RegistryError(f"manifest {manifest_digest}: descriptor without a sha256 digest: {d!r}")

        def blob(desc: dict[str, Any]) -> str:
            digest = desc.get("digest", "")
            size = desc.get("size")
            return reg.with_retries(lambda: self.content.ensure(digest, lambda f: source.fetch(desc, f), size))[0]

        for digest, body in source.extra_blobs:
            self.content.put_bytes(body, digest)
        self.content.put_bytes(manifest_body, manifest_digest)
        with open(blob(cfg_desc), "rb") as f:
            config = _json_doc(f.read(), f"image config {cfg_desc['digest']}")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise DigestMismatch(f"image config lists {len(diff_ids)} diff ids for {len(layers)} layers")
        chains = chain_ids(diff_ids)

        todo = [i for i in range(len(layers)) if not self.snapshots.exists(chains[i])]
        with ThreadPoolExecutor(max_workers=PARALLEL_LAYERS) as pool:
            # all downloads first, then the unpacks: a blob's fsync during an unpack stalls its file
            # creations behind the journal commit (the way containerd orders it, too)
            paths = dict(zip(todo, pool.map(lambda i: blob(layers[i]), todo), strict=True))
        # the unpacks one after the other, as containerd applies them: in threads they fight for the GIL
        # at every syscall (measured on 2 cores: ~10% more wall time and ~1.7x the CPU of serial unpacks)
        for i in todo:
            self.snapshots.ensure(chains[i], lambda dest, i=i: unpack_layer(paths[i], dest, diff_ids[i]))

        image_id = cfg_desc["digest"]
        # containerd's image size: every descriptor walked from the target (index included), config, layers
        size = (sum(len(body) for _, body in source.extra_blobs) + len(manifest_body) + int(cfg_desc.get("size") or 0)
                + sum(int(d.get("size") or 0) for d in layers))
        blobs = {d for d, _ in source.extra_blobs} | {manifest_digest, image_id} | {d["digest"] for d in layers}
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR IGNORE INTO images (id, manifest_digest, size, config, created_ns) "
                       "VALUES (?,?,?,?,?)", (image_id, manifest_digest, size, json.dumps(config), time.time_ns()))
            db.execute("UPDATE images SET manifest_digest=?, size=? WHERE id=?", (manifest_digest, size, image_id))
            for d in blobs:
                db.execute("INSERT OR IGNORE INTO image_blobs VALUES (?,?)", (image_id, d))
            for i, c in enumerate(chains):
                db.execute("INSERT OR REPLACE INTO image_snapshots VALUES (?,?,?)", (image_id, i, c))
            for name in source.tags:
                db.execute("INSERT OR REPLACE INTO refs VALUES (?,?,0)", (name, image_id))
            for name in source.digest_names:
                db.execute("INSERT OR REPLACE INTO refs VALUES (?,?,1)", (name, image_id))
            db.execute("COMMIT")
            img = self._image(db, image_id)
        assert img is not None
        return img

    # ---- import ----------------------------------------------------------------------------------------

    def import_archive(self, path: str) -> list[Image]:
        """Import an OCI layout (directory or tar) or a docker-archive tar (``docker save``); returns the images."""
        if not os.path.exists(path):
            raise ArchiveError(f"{path}: no such file")
        with self._cleanup_on_failure(), flocked(self._gc_lock, shared=True), _Archive(path) as ar:
            if ar.has("oci-layout") and ar.has("index.json"):
                return self._import_oci(ar)
            if ar.has("manifest.json"):
                return self._import_docker(ar)
            raise ArchiveError(f"{path}: neither an OCI layout (oci-layout, index.json) nor a docker archive "
                               "(manifest.json)")

    def _import_oci(self, ar: _Archive) -> list[Image]:
        index = ar.json("index.json")
        out: list[Image] = []
        for entry in index.get("manifests") or []:
            ann = entry.get("annotations") or {}
            name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name") or ""
            tags = []
            if name and ("/" in name or ":" in name) and looks_like_reference(name):
                tags = [str(parse(name))]
            top_digest = entry["digest"]
            body = ar.blob(top_digest)
            extra: list[tuple[str, bytes]] = []
            doc = _json_doc(body, f"{ar.path}: {top_digest}")
            mt = entry.get("mediaType") or doc.get("mediaType")
            if mt in reg.INDEX_TYPES:
                extra.append((top_digest, body))
                chosen = self.client.select_platform(Reference("import", "archive"), doc)
                top_digest = chosen["digest"]
                body = ar.blob(top_digest)

            def fetch(desc: dict[str, Any], f: BinaryIO) -> None:
                ar.copy_blob(desc["digest"], f)

            out.append(self._install(top_digest, body, _Source(fetch, tags, [], extra)))
        return out

    def _import_docker(self, ar: _Archive) -> list[Image]:
        out: list[Image] = []
        entries = ar.json("manifest.json")
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("Config"), str)
                                                    for e in entries):
            raise ArchiveError(f"{ar.path}: manifest.json is not a docker-archive manifest (a list with Config)")
        for entry in entries:
            cfg_name = entry["Config"]
            cfg = ar.read(cfg_name)
            layers = []
            names = {}
            for lname in entry.get("Layers") or []:
                h = hashlib.sha256()
                size = 0
                with ar.lock, ar.open(lname) as f:
                    head = f.read(4)
                    h.update(head)
                    size += len(head)
                    while data := f.read(1 << 20):
                        h.update(data)
                        size += len(data)
                digest = "sha256:" + h.hexdigest()
                names[digest] = lname
                mt = (reg.MT_DOCKER_LAYER_GZIP if head[:2] == b"\x1f\x8b" else
                      "application/vnd.oci.image.layer.v1.tar+zstd" if head == b"\x28\xb5\x2f\xfd" else
                      "application/vnd.docker.image.rootfs.diff.tar")
                layers.append({"mediaType": mt, "size": size, "digest": digest})
            manifest = {
                "schemaVersion": 2, "mediaType": reg.MT_DOCKER_MANIFEST,
                "config": {"mediaType": reg.MT_DOCKER_CONFIG, "size": len(cfg),
                           "digest": "sha256:" + hashlib.sha256(cfg).hexdigest()},
                "layers": layers,
            }
            body = json.dumps(manifest, separators=(",", ":")).encode()
            cfg_digest = manifest["config"]["digest"]

            def fetch(desc: dict[str, Any], f: BinaryIO, names: dict[str, str] = names, cfg_name: str = cfg_name,
                      cfg_digest: str = cfg_digest) -> None:
                ar.copy(cfg_name if desc["digest"] == cfg_digest else names[desc["digest"]], f)

            tags = []
            for t in entry.get("RepoTags") or []:
                try:
                    tags.append(str(parse(t)))
                except InvalidReference as e:
                    raise ArchiveError(f"docker archive: bad RepoTag {t!r}: {e}") from e
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            out.append(self._install(digest, body, _Source(fetch, tags, [], [])))
        return out


class _Archive:
    """Read access to an OCI layout or docker archive, as a directory or a (possibly compressed) tar."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        self.lock = threading.Lock()  # one TarFile, one file position: layers are copied out one at a time
        if not os.path.isdir(path):
            try:
                self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed in __exit__
            except (tarfile.TarError, OSError) as e:
                raise ArchiveError(f"{path}: not a tar archive: {e}") from e
            for m in self.tar.getmembers():
                self.members[m.name.lstrip("./") if m.name.startswith("./") else m.name] = m

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tar:
            self.tar.close()

    def has(self, name: str) -> bool:
        if self.tar is None:
            return os.path.isfile(os.path.join(self.path, name))
        return name in self.members

    def open(self, name: str) -> BinaryIO:
        if ".." in name.split("/") or name.startswith("/"):
            raise ArchiveError(f"archive names a file outside itself: {name!r}")
        if self.tar is None:
            return open(os.path.join(self.path, name), "rb")
        m = self.members.get(name)
        f = self.tar.extractfile(m) if m and m.isreg() else None
        if f is None:
            raise ArchiveError(f"{self.path}: {name} missing from the archive")
        return f  # type: ignore[return-value]

    def read(self, name: str) -> bytes:
        with self.lock, self.open(name) as f:
            return f.read()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as e:
            raise ArchiveError(f"{self.path}: {name} is not JSON") from e

    def copy(self, name: str, out: BinaryIO) -> None:
        with self.lock, self.open(name) as f:
            while data := f.read(1 << 20):
                out.write(data)

    def _blob_name(self, digest: str) -> str:
        algo, _, hexpart = digest.partition(":")
        return f"blobs/{algo}/{hexpart}"

    def blob(self, digest: str) -> bytes:
        data = self.read(self._blob_name(digest))
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise DigestMismatch(f"{self.path}: blob {digest} does not match its digest")
        return data

    def copy_blob(self, digest: str, out: BinaryIO) -> None:
        self.copy(self._blob_name(digest), out)
