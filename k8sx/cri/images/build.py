"""A tiny OCI image builder: a directory (or raw layer tars) in, manifest/config/layers out.

Nodes without a registry need images too: the demo turns the host's static ``/bin/busybox`` into an
image and imports it, and the tests build exactly the images they pull (shared base layers, whiteouts,
indexes, both media-type families, deliberately malicious layers). Output goes to an OCI layout (dir
or tar), a docker archive, or a registry (via :class:`~k8sx.cri.images.registry.RegistryClient`).
Layers are reproducible: entries sorted, mtimes clamped, gzip header without a timestamp.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import Any

from k8sx.cri.images import registry as reg
from k8sx.cri.images.errors import ImageError
from k8sx.cri.images.reference import parse

EPOCH = 1672531200  # 2023-01-01T00:00:00Z
CREATED = "2023-01-01T00:00:00Z"


@dataclass
class Blob:
    """Content plus the descriptor that names it."""

    media_type: str
    data: bytes
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        d.update(extra)
        return d


@dataclass
class BuiltImage:
    """One single-platform image: its manifest, config and layer blobs."""

    manifest: Blob
    config: Blob
    layers: list[Blob]

    @property
    def id(self) -> str:
        return self.config.digest

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers, self.manifest]


def tar_dir(path: str, mtime: int | None = EPOCH) -> bytes:
    """An uncompressed, reproducible tar of the tree at ``path`` (hardlinks kept, owners kept)."""
    buf = io.BytesIO()

    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        if mtime is not None:
            ti.mtime = min(int(ti.mtime), mtime)
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(path)):
            tf.add(os.path.join(path, name), arcname=name, recursive=True, filter=norm)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def make_image(layer_tars: list[bytes], config: dict[str, Any] | None = None, *, docker: bool = False,
               compress: bool = True, architecture: str | None = None, os_: str = "linux") -> BuiltImage:
    """An image from uncompressed layer tars; ``config`` is the image's ``config`` section (Cmd, Env, User...)."""
    if docker:
        lt = reg.MT_DOCKER_LAYER_GZIP if compress else "application/vnd.docker.image.rootfs.diff.tar"
        ct, mt = reg.MT_DOCKER_CONFIG, reg.MT_DOCKER_MANIFEST
    else:
        lt = reg.MT_OCI_LAYER_GZIP if compress else reg.MT_OCI_LAYER
        ct, mt = reg.MT_OCI_CONFIG, reg.MT_OCI_MANIFEST
    layers = [Blob(lt, gzip_bytes(t) if compress else t) for t in layer_tars]
    cfg = {
        "created": CREATED,
        "architecture": architecture or reg.host_platform()["architecture"],
        "os": os_,
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layer_tars]},
        "history": [{"created": CREATED, "created_by": "k8sx build"} for _ in layer_tars],
    }
    config_blob = Blob(ct, json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode())
    manifest = {"schemaVersion": 2, "mediaType": mt, "config": config_blob.descriptor(),
                "layers": [b.descriptor() for b in layers]}
    return BuiltImage(Blob(mt, json.dumps(manifest, separators=(",", ":")).encode()), config_blob, layers)


def make_index(entries: list[tuple[BuiltImage, dict[str, str]]], *, docker: bool = False) -> Blob:
    """An OCI index (or Docker manifest list) of ``(image, platform)`` pairs."""
    mt = reg.MT_DOCKER_LIST if docker else reg.MT_OCI_INDEX
    doc = {"schemaVersion": 2, "mediaType": mt,
           "manifests": [img.manifest.descriptor(platform=p) for img, p in entries]}
    return Blob(mt, json.dumps(doc, separators=(",", ":")).encode())


def image_from_dir(path: str, config: dict[str, Any] | None = None, **kw: Any) -> BuiltImage:
    """A one-layer image of the tree at ``path``."""
    return make_image([tar_dir(path)], config, **kw)


def busybox_rootfs(dest: str, busybox: str = "/bin/busybox") -> None:
    """A minimal rootfs in ``dest``: the static busybox with its applets as hardlinks, /etc/passwd, /tmp."""
    if not os.path.isfile(busybox):
        raise ImageError(f"{busybox} not found (apt-get install busybox-static)")
    for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    bb = os.path.join(dest, "bin", "busybox")
    shutil.copy2(busybox, bb)
    os.chmod(bb, 0o755)
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox" and "/" not in a:
            os.link(bb, os.path.join(dest, "bin", a))
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")


def write_oci_layout(dest: str, images: list[tuple[BuiltImage | Blob, str]], extra: list[Blob] = ()) -> None:  # type: ignore[assignment]
    """Write an OCI layout to directory ``dest`` (or a tar if ``dest`` ends in .tar); names go in annotations.

    Each entry is ``(image or index blob, name)``; ``extra`` carries the blobs an index refers to.
    """
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    manifests = []
    for item, name in images:
        top = item.manifest if isinstance(item, BuiltImage) else item
        if isinstance(item, BuiltImage):
            for b in item.blobs():
                files[f"blobs/sha256/{b.digest[7:]}"] = b.data
        else:
            files[f"blobs/sha256/{item.digest[7:]}"] = item.data
        ann = {"org.opencontainers.image.ref.name": name} if name else {}
        if name and ("/" in name or ":" in name):
            ann["io.containerd.image.name"] = str(parse(name))
        manifests.append(top.descriptor(annotations=ann) if ann else top.descriptor())
    for b in extra:
        files[f"blobs/sha256/{b.digest[7:]}"] = b.data
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": reg.MT_OCI_INDEX,
                                      "manifests": manifests}).encode()
    _write_files(dest, files)


def write_docker_archive(dest: str, images: list[tuple[BuiltImage, list[str]]]) -> None:
    """Write a ``docker save``-style tar: ``manifest.json``, ``<config>.json``, ``<layer>/layer.tar``."""
    files: dict[str, bytes] = {}
    entries = []
    for img, tags in images:
        cfg_name = img.config.digest[7:] + ".json"
        files[cfg_name] = img.config.data
        names = []
        for layer in img.layers:
            raw = gzip.decompress(layer.data) if layer.data[:2] == b"\x1f\x8b" else layer.data
            n = hashlib.sha256(raw).hexdigest() + "/layer.tar"
            files[n] = raw
            names.append(n)
        entries.append({"Config": cfg_name, "RepoTags": tags, "Layers": names})
    files["manifest.json"] = json.dumps(entries).encode()
    _write_files(dest, files)


def _write_files(dest: str, files: dict[str, bytes]) -> None:
    if dest.endswith(".tar"):
        with tarfile.open(dest, "w") as tf:
            for name, data in files.items():
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(data), EPOCH, 0o644
                tf.addfile(ti, io.BytesIO(data))
        return
    for name, data in files.items():
        p = os.path.join(dest, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


def push(client: reg.RegistryClient, ref: str, image: BuiltImage, creds: reg.Credentials | None = None) -> str:
    """Push ``image`` to the registry under ``ref``; returns the manifest digest."""
    r = parse(ref)
    for b in (image.config, *image.layers):
        client.push_blob(r, b.data, creds)
    return client.push_manifest(r, image.manifest.data, image.manifest.media_type, creds)


def push_index(client: reg.RegistryClient, ref: str, entries: list[tuple[BuiltImage, dict[str, str]]], *,
               docker: bool = False, creds: reg.Credentials | None = None) -> str:
    """Push each image by digest and an index over them under ``ref``; returns the index digest."""
    r = parse(ref)
    for img, _ in entries:
        for b in (img.config, *img.layers):
            client.push_blob(r, b.data, creds)
        client.push_manifest(parse(f"{r.name}@{img.manifest.digest}"), img.manifest.data, img.manifest.media_type,
                             creds)
    index = make_index(entries, docker=docker)
    return client.push_manifest(r, index.data, index.media_type, creds)


def main(argv: list[str] | None = None) -> int:
    """``python -m k8sx.cri.images.build busybox OUT.tar [--name REF] [--docker]``: the demo's offline image."""
    import argparse
    import sys
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m k8sx.cri.images.build",
                                 description="Build a one-layer image of the host's static busybox.")
    ap.add_argument("what", choices=["busybox"])
    ap.add_argument("out", help="output: an OCI layout (.tar or directory) or, with --docker, a docker archive")
    ap.add_argument("--name", default="k8sx.local/busybox:latest")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--docker", action="store_true", help="write a docker-archive (docker save format)")
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="k8sx-build-") as tmp:
            busybox_rootfs(tmp, args.busybox)
            img = image_from_dir(tmp, {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
                                 docker=args.docker)
        if args.docker:
            write_docker_archive(args.out, [(img, [args.name])])
        else:
            write_oci_layout(args.out, [(img, args.name)])
    except (ImageError, OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    print(f"{args.out}: {args.name} ({img.id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
