"""The store's guarantees: one download per blob under concurrency, exact frees on removal, crash safety,
digest verification, auth, the registries configuration, and import of OCI layouts and docker archives."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
from imagetools import AUTH_PASSWORD, AUTH_USER, layer_tar

from k8sx.cri.images import build
from k8sx.cri.images.errors import DigestMismatch, ImageNotFound, RegistryError
from k8sx.cri.images.store import Auth, ImageStore


def store_state(store: ImageStore) -> dict:
    return {
        "images": store.list(),
        "blobs": store.content.all(),
        "snapshots": store.snapshots.all(),
        "ingest": os.listdir(store.content.ingest_dir),
        "snapdir": [n for n in os.listdir(store.snapshots.dir) if n.startswith("tmp-")],
    }


EMPTY = {"images": [], "blobs": [], "snapshots": [], "ingest": [], "snapdir": []}


def test_concurrent_pulls_download_each_blob_once(registry, tmpdir_k8sxti):
    img = build.make_image([layer_tar({"a": os.urandom(300_000)}), layer_tar({"b": os.urandom(300_000)})])
    ref = registry.push(registry.repo("conc") + ":1", img)
    root = os.path.join(tmpdir_k8sxti, "store")
    ImageStore(root)
    code = f"from k8sx.cri.images.store import ImageStore; print(ImageStore({root!r}).pull({ref!r}).id)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ImageStore(root).pull(ref).id)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert results == [img.id, img.id] and out.strip() == img.id
    for blob in (img.config, *img.layers):
        assert registry.blob_gets(blob.digest) == 1, blob.digest
    assert len(ImageStore(root).list()) == 1


def test_remove_frees_exactly_the_unshared(registry, image_store):
    base = layer_tar({"base": "shared"})
    a = build.make_image([base, layer_tar({"a": "only a"})])
    b = build.make_image([base, layer_tar({"b": "only b"})])
    ra, rb = registry.push(registry.repo("ra") + ":1", a), registry.push(registry.repo("rb") + ":1", b)
    ia, ib = image_store.pull(ra), image_store.pull(rb)
    b_layers = image_store.layers(ib.id)
    assert image_store.remove("sha256:" + "f" * 64) is False
    assert image_store.remove(ra) is True
    assert image_store.get(ra) is None and image_store.get(ia.id) is None
    assert set(image_store.content.all()) == {b.manifest.digest, b.config.digest, *(x.digest for x in b.layers)}
    assert len(image_store.snapshots.all()) == 2
    assert all(os.path.isdir(p) for p in image_store.layers(ib.id)) and image_store.layers(ib.id) == b_layers
    assert image_store.remove(ib.id[7:20]) is True  # by id prefix
    assert store_state(image_store) == EMPTY
    assert image_store.remove(rb) is False


def test_lease_keeps_layers_of_a_removed_image(registry, image_store):
    img = build.make_image([layer_tar({"l": "leased"}), layer_tar({"m": "more"})])
    ref = registry.push(registry.repo("lease") + ":1", img)
    got = image_store.pull(ref)
    dirs = image_store.lease("k8sxti-ctr-1", got.id)
    assert dirs == image_store.layers(got.id)
    assert image_store.remove(ref)
    assert image_store.get(ref) is None and all(os.path.isdir(d) for d in dirs)
    assert image_store.content.all() == []  # blobs go at once; the unpacked layers stay for the container
    image_store.release("k8sxti-ctr-1")
    assert store_state(image_store) == EMPTY


def test_two_tags_one_image_removed_together(registry, image_store):
    img = build.make_image([layer_tar({"t": "t"})])
    repo = registry.repo("tags")
    r1, r2 = registry.push(repo + ":1", img), registry.push(repo + ":2", img)
    image_store.pull(r1)
    got = image_store.pull(r2)
    assert got.repo_tags == [r1, r2] and len(image_store.list()) == 1
    assert image_store.get(f"{r1}@{img.manifest.digest}").id == img.id  # name:tag@digest
    assert image_store.remove(r1)
    assert store_state(image_store) == EMPTY


class StallingProxy:
    """A loopback TCP proxy that passes ``limit`` bytes of each response, then hangs (a stuck registry).

    With ``cut`` it instead closes the first ``cut`` connections that exceed ``limit`` (a flaky network);
    with ``rewrite=(old, new)`` it passes everything but edits responses on the way (a man in the middle).
    """

    def __init__(self, upstream_port: int, limit: int, cut: int = 0, rewrite: tuple[bytes, bytes] | None = None,
                 ) -> None:
        self.upstream, self.limit, self.cut, self.flaky = upstream_port, limit, cut, cut > 0
        self.rewrite = rewrite
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            self.conns += [c, u]
            threading.Thread(target=self._pipe, args=(c, u, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, self.limit), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and self.rewrite:
                    data = data.replace(*self.rewrite)
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    if not self.flaky:
                        self.stop.wait()
                        return
                    with self.lock:
                        cut, self.cut = self.cut > 0, self.cut - 1
                    if cut:
                        dst.shutdown(socket.SHUT_RDWR)
                        dst.close()
                        return
                    data, limit = data[limit - sent :], None
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


def test_killed_pull_leaves_nothing_after_reopen(registry, tmpdir_k8sxti):
    small = layer_tar({"small": "done before the kill"})
    big = layer_tar({"big": os.urandom(2_000_000)})
    img = build.make_image([small, big], compress=False)
    path = registry.repo("killed") + ":1"
    registry.push(path, img)
    proxy = StallingProxy(registry.port, limit=1_200_000)
    root = os.path.join(tmpdir_k8sxti, "store")
    ref = path.replace(registry.host, f"127.0.0.1:{proxy.port}")
    code = f"from k8sx.cri.images.store import ImageStore; ImageStore({root!r}).pull({ref!r})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        ingest = os.path.join(root, "ingest")
        while time.monotonic() < deadline:
            partial = [n for n in os.listdir(ingest)] if os.path.isdir(ingest) else []
            if partial and os.path.getsize(os.path.join(ingest, partial[0])) > 0 and \
                    os.path.exists(os.path.join(root, "blobs", "sha256", img.layers[0].digest[7:])):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the pull never got half-way")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
        proxy.close()
    assert os.listdir(os.path.join(root, "ingest")), "the kill should have left a partial download"
    store = ImageStore(root)  # reopening cleans up
    assert store_state(store) == EMPTY
    assert [n for n in os.listdir(os.path.join(root, "locks")) if n != "gc"] == []
    assert store.pull(path).id == img.id  # and the store still works


def test_reopen_cleans_what_a_dead_unpack_left(registry, tmpdir_k8sxti):
    """A process killed mid-unpack leaves a tmp snapshot dir, an ingest file and an unreferenced blob."""
    root = os.path.join(tmpdir_k8sxti, "store")
    store = ImageStore(root)
    img = build.make_image([layer_tar({"kept": "k"})])
    ref = registry.push(registry.repo("dead") + ":1", img)
    store.pull(ref)
    before = store_state(store)
    h = "ab" * 32
    os.makedirs(os.path.join(store.snapshots.dir, f"tmp-{h}.dead1234", "fs", "usr", "bin"))
    with open(os.path.join(store.content.ingest_dir, f"{h}.dead5678"), "wb") as f:
        f.write(b"partial")
    orphan = store.content.put_bytes(b"an orphan blob no image references")
    held = ImageStore(root)  # a second opener while nothing is running: cleans up
    assert store_state(held) == before and not store.content.exists(orphan)
    assert held.get(ref).id == img.id and all(os.path.isdir(p) for p in held.layers(img.id))


def test_interrupted_downloads_are_retried(registry, image_store):
    img = build.make_image([layer_tar({"a": os.urandom(500_000)}), layer_tar({"b": os.urandom(500_000)})],
                           compress=False)
    path = registry.repo("flaky") + ":1"
    registry.push(path, img)
    proxy = StallingProxy(registry.port, limit=200_000, cut=2)
    try:
        got = image_store.pull(path.replace(registry.host, f"127.0.0.1:{proxy.port}"))
    finally:
        proxy.close()
    assert got.id == img.id and proxy.cut < 0  # two connections were cut mid-blob, and the pull still succeeded
    assert os.listdir(image_store.content.ingest_dir) == []
    for layer, name in zip(image_store.layers(got.id), "ab", strict=True):
        assert os.path.getsize(os.path.join(layer, name)) == 500_000


def test_fs_info_counts_the_store(registry, image_store):
    empty = image_store.fs_info()
    img = build.make_image([layer_tar({"f": os.urandom(100_000)})])
    ref = registry.push(registry.repo("fsinfo") + ":1", img)
    image_store.pull(ref)
    full = image_store.fs_info()
    assert full.mountpoint == image_store.root and full.timestamp_ns > empty.timestamp_ns
    assert full.used_bytes >= empty.used_bytes + 200_000 and full.inodes_used > empty.inodes_used
    image_store.remove(ref)
    assert image_store.fs_info().used_bytes == empty.used_bytes


def test_digest_mismatch_rejected(registry, image_store):
    img = build.make_image([layer_tar({"x": os.urandom(1000)})])
    ref = registry.push(registry.repo("corrupt") + ":1", img)
    blob = registry.blob_path(img.layers[0].digest)
    with open(blob, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0xFF
        f.seek(0)
        f.write(data)
    with pytest.raises(DigestMismatch):
        image_store.pull(ref)
    assert store_state(image_store) == EMPTY


def test_tampered_manifest_rejected(registry, image_store):
    """A man in the middle of a plain-HTTP pull edits the manifest (same length): the digests catch it."""
    img = build.make_image([layer_tar({"m": "m"})])
    path = registry.repo("tampered") + ":1"
    registry.push(path, img)
    proxy = StallingProxy(registry.port, limit=1 << 30, rewrite=(b'"schemaVersion":2', b'"schemaVersion":3'))
    try:
        ref = path.replace(registry.host, f"127.0.0.1:{proxy.port}")
        with pytest.raises(DigestMismatch, match="Docker-Content-Digest"):
            image_store.pull(ref)
        with pytest.raises(DigestMismatch, match="hashing to"):
            image_store.pull(f"{ref.rsplit(':', 1)[0]}@{img.manifest.digest}")
    finally:
        proxy.close()
    assert store_state(image_store) == EMPTY


def test_diff_id_mismatch_rejected(registry, image_store):
    img = build.make_image([layer_tar({"x": "x"})])
    cfg = json.loads(img.config.data)
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    img.config = build.Blob(img.config.media_type, json.dumps(cfg).encode())
    m = json.loads(img.manifest.data)
    m["config"] = img.config.descriptor()
    img.manifest = build.Blob(img.manifest.media_type, json.dumps(m).encode())
    ref = registry.push(registry.repo("diffid") + ":1", img)
    with pytest.raises(DigestMismatch, match="diff id|image config says"):
        image_store.pull(ref)
    assert store_state(image_store) == EMPTY


def test_basic_auth(auth_registry, tmpdir_k8sxti):
    img = build.make_image([layer_tar({"secret": "s"})])
    ref = auth_registry.push(auth_registry.repo("auth") + ":1", img)
    store = ImageStore(os.path.join(tmpdir_k8sxti, "s1"))
    with pytest.raises(RegistryError, match="basic auth|unauthorized"):
        store.pull(ref)
    with pytest.raises(RegistryError, match="unauthorized"):
        store.pull(ref, Auth(username=AUTH_USER, password="wrong"))
    assert store.pull(ref, Auth(username=AUTH_USER, password=AUTH_PASSWORD)).id == img.id
    store.remove(ref)
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    assert store.pull(ref, Auth(auth=token)).id == img.id
    cfg = os.path.join(tmpdir_k8sxti, "config.json")
    with open(cfg, "w") as f:
        json.dump({"auths": {auth_registry.host: {"auth": token}}}, f)
    other = ImageStore(os.path.join(tmpdir_k8sxti, "s2"), docker_config=cfg)
    assert other.pull(ref).id == img.id


def test_bearer_token_auth(token_registry, tmpdir_k8sxti):
    from imagetools import REFRESH_TOKEN

    img = build.make_image([layer_tar({"tok": "t"})])
    ref = token_registry.push(token_registry.repo("token") + ":1", img)
    store = ImageStore(os.path.join(tmpdir_k8sxti, "s"))
    with pytest.raises(RegistryError, match="unauthorized"):
        store.pull(ref)  # anonymous token: no access
    with pytest.raises(RegistryError, match="token server"):
        store.pull(ref, Auth(username=AUTH_USER, password="wrong"))
    before = token_registry.token_server.issued
    assert store.pull(ref, Auth(username=AUTH_USER, password=AUTH_PASSWORD)).id == img.id
    assert token_registry.token_server.issued == before + 1  # one token, reused for manifest and blobs
    store.remove(ref)
    assert store.pull(ref, Auth(identity_token=REFRESH_TOKEN)).id == img.id
    store.remove(ref)
    token = token_registry.token_server.sign(AUTH_USER, [{"type": "repository", "name": ref.split("/", 1)[1]
                                                           .rsplit(":", 1)[0], "actions": ["pull"]}])
    assert store.pull(ref, Auth(registry_token=token)).id == img.id


def test_registries_config_mirror_and_plain_http(registry, tmpdir_k8sxti):
    img = build.make_image([layer_tar({"m": "mirrored"})])
    path = registry.repo("mirror") + ":1"
    registry.push(path, img)
    hosts = os.path.join(tmpdir_k8sxti, "certs.d")
    os.makedirs(os.path.join(hosts, "k8sxti.invalid"))
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: connection refused, the next host is tried
    with open(os.path.join(hosts, "k8sxti.invalid", "hosts.toml"), "w") as f:
        f.write(textwrap.dedent(f"""\
            server = "http://{registry.host}"

            [host."http://127.0.0.1:{dead.getsockname()[1]}"]
              capabilities = ["pull", "resolve"]
            """))
    try:
        store = ImageStore(os.path.join(tmpdir_k8sxti, "s"), registries_config=hosts)
        ref = path.replace(registry.host, "k8sxti.invalid")
        got = store.pull(ref)
    finally:
        dead.close()
    assert got.id == img.id and got.repo_tags == [ref]
    with pytest.raises(RegistryError):
        ImageStore(os.path.join(tmpdir_k8sxti, "s2"), registries_config=os.path.join(hosts, "missing"))


@pytest.mark.parametrize("kind", ["oci-dir", "oci-tar", "oci-index-tar", "docker-archive"])
def test_import(kind, tmpdir_k8sxti, image_store):
    base = layer_tar({"bin/": None, "bin/tool": "tool"})
    img = build.make_image([base, layer_tar({"etc/": None, "etc/x": "x"})], {"Cmd": ["/bin/tool"]},
                           docker=kind == "docker-archive")
    name = "k8sxti.local/imported/app:v1"
    dest = os.path.join(tmpdir_k8sxti, "archive" + ("" if kind == "oci-dir" else ".tar"))
    if kind == "docker-archive":
        build.write_docker_archive(dest, [(img, ["k8sxti.local/imported/app:v1"])])
    elif kind == "oci-index-tar":
        other = build.make_image([layer_tar({"arch": "other"})], architecture="s390x" if os.uname().machine !=
                                 "s390x" else "amd64")
        plat = {"os": "linux", "architecture": json.loads(img.config.data)["architecture"]}
        index = build.make_index([(other, {"os": "linux", "architecture": json.loads(other.config.data)[
            "architecture"]}), (img, plat)])
        build.write_oci_layout(dest, [(index, name)], extra=[*img.blobs(), *other.blobs()])
    else:
        build.write_oci_layout(dest, [(img, name)])
    (got,) = image_store.import_archive(dest)
    assert got.id == img.id and got.repo_tags == [name] and got.config["config"]["Cmd"] == ["/bin/tool"]
    lower, upper = image_store.layers(got.id)
    with open(os.path.join(lower, "bin", "tool")) as f:
        assert f.read() == "tool"
    assert os.listdir(os.path.join(upper, "etc")) == ["x"]


@pytest.mark.parametrize("docker", [False, True])
def test_import_many_layers_from_one_tar(docker, tmpdir_k8sxti, image_store):
    """Layers are unpacked in parallel but read from one tar file: reads must not interleave."""
    layers = [layer_tar({f"l{i}": os.urandom(300_000)}) for i in range(6)]
    img = build.make_image(layers, docker=docker)
    dest = os.path.join(tmpdir_k8sxti, "many.tar")
    if docker:
        build.write_docker_archive(dest, [(img, ["k8sxti.local/many:1"])])
    else:
        build.write_oci_layout(dest, [(img, "k8sxti.local/many:1")])
    (got,) = image_store.import_archive(dest)
    assert got.id == img.id and len(image_store.layers(got.id)) == 6


def test_import_rejects_garbage(tmpdir_k8sxti, image_store):
    from k8sx.cri.images.errors import ArchiveError

    junk = os.path.join(tmpdir_k8sxti, "junk.tar")
    with open(junk, "wb") as f:
        f.write(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError):
        image_store.import_archive(junk)
    with pytest.raises(ArchiveError):
        image_store.import_archive(os.path.join(tmpdir_k8sxti, "absent.tar"))
    bad = os.path.join(tmpdir_k8sxti, "bad-docker")
    os.makedirs(bad)
    with open(os.path.join(bad, "manifest.json"), "w") as f:
        f.write('{"not": "a list"}')
    with pytest.raises(ArchiveError, match="docker-archive manifest"):
        image_store.import_archive(bad)
    img = build.make_image([layer_tar({"a": "a"})])
    img.manifest = build.Blob(img.manifest.media_type, b"{not json")
    oci = os.path.join(tmpdir_k8sxti, "bad-oci")
    build.write_oci_layout(oci, [(img, "k8sxti.local/bad:1")])
    with pytest.raises(RegistryError, match="not JSON"):
        image_store.import_archive(oci)
    assert store_state(image_store) == EMPTY
    with pytest.raises(ImageNotFound):
        image_store.layers("sha256:" + "e" * 64)


def test_snapshot_dir_spreads_new_snapshots(image_store):
    """chattr +T on snapshots/ where the fs has it (ext4 here): new snapshots avoid just-freed inode groups."""
    from k8sx.cri.images.snapshots import spread_subdirs

    fs = subprocess.run(["stat", "-f", "-c", "%T", image_store.snapshots.dir], capture_output=True, text=True,
                        check=True).stdout.strip()
    attrs = subprocess.run(["lsattr", "-d", image_store.snapshots.dir], capture_output=True, text=True).stdout
    if fs.startswith("ext"):
        assert "T" in attrs.split()[0]
    shm = tempfile.mkdtemp(prefix="k8sxtu-", dir="/dev/shm")  # tmpfs: no such attribute, no error either
    try:
        assert spread_subdirs(shm) is False
    finally:
        os.rmdir(shm)
