"""Pulling from a real registry: single and multi-layer images, shared layers, indexes, media types."""

from __future__ import annotations

import json
import os
import subprocess

from imagetools import layer_tar

from k8sx.cri.images import build


def test_pull_single_layer(registry, image_store):
    img = build.make_image([layer_tar({"hello.txt": "hi\n"})], {"Cmd": ["sh"], "User": "1002"})
    ref = registry.push(registry.repo("single") + ":v1", img)
    got = image_store.pull(ref)
    assert got.id == img.id
    assert got.repo_tags == [ref]
    name = ref.rsplit(":", 1)[0]
    assert got.repo_digests == [f"{name}@{img.manifest.digest}"]
    assert got.uid == 1002 and got.username == ""
    assert got.size == img.manifest.size + img.config.size + sum(b.size for b in img.layers)
    (layer,) = image_store.layers(got.id)
    with open(os.path.join(layer, "hello.txt")) as f:
        assert f.read() == "hi\n"
    assert image_store.get(ref).id == img.id
    assert image_store.get(got.id[7:19]).id == img.id
    assert image_store.get(f"{name}@{img.manifest.digest}").id == img.id
    assert [i.id for i in image_store.list()] == [img.id]


def test_store_root_is_private(registry, image_store, tmpdir_k8sxti):
    """Layers keep setuid bits; a local user must not be able to reach them through the store."""
    import stat

    from imagetools import raw_tar

    ti = __import__("tarfile").TarInfo("su")
    ti.mode = 0o4755
    img = build.make_image([raw_tar([(ti, b"#!/bin/sh\n")])])
    got = image_store.pull(registry.push(registry.repo("suid") + ":1", img))
    (layer,) = image_store.layers(got.id)
    assert stat.S_IMODE(os.stat(os.path.join(layer, "su")).st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(image_store.root).st_mode) == 0o700
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "test", "-e",
                            os.path.join(layer, "su")])
    assert probe.returncode == 1  # nobody cannot even see it


def test_pull_multi_layer_docker_schema2_with_whiteouts(registry, image_store):
    base = layer_tar({"etc/": None, "etc/a": "a", "etc/b": "b", "data/": None, "data/x": "x"})
    top = layer_tar({"etc/.wh.a": "", "data/.wh..wh..opq": "", "data/y": "y", "etc/c": "c"})
    img = build.make_image([base, top], {"User": "www-data"}, docker=True)
    ref = registry.push(registry.repo("multi") + ":v1", img)
    got = image_store.pull(ref)
    assert got.username == "www-data" and got.uid is None
    lower, upper = image_store.layers(got.id)
    assert sorted(os.listdir(os.path.join(lower, "etc"))) == ["a", "b"]
    st = os.lstat(os.path.join(upper, "etc", "a"))
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0) and (st.st_mode & 0o170000) == 0o020000
    assert os.getxattr(os.path.join(upper, "data"), "trusted.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(upper, "etc", ".wh.a"))
    assert sorted(os.listdir(os.path.join(upper, "data"))) == ["y"]


def test_shared_layers_stored_once(registry, image_store):
    base = layer_tar({"base.txt": "shared base"})
    a = build.make_image([base, layer_tar({"a": "a"})])
    b = build.make_image([base, layer_tar({"b": "b"})])
    ra = registry.push(registry.repo("sa") + ":1", a)
    rb = registry.push(registry.repo("sb") + ":1", b)
    ia, ib = image_store.pull(ra), image_store.pull(rb)
    la, lb = image_store.layers(ia.id), image_store.layers(ib.id)
    assert la[0] == lb[0] and la[1] != lb[1]
    assert len(image_store.snapshots.all()) == 3
    assert len([d for d in image_store.content.all() if d == a.layers[0].digest]) == 1


def test_index_platform_selection(registry, tmpdir_k8sxti):
    from k8sx.cri.images.store import ImageStore

    amd = build.make_image([layer_tar({"arch": "amd64"})], architecture="amd64")
    arm = build.make_image([layer_tar({"arch": "arm64"})], architecture="arm64")
    for docker in (False, True):
        ref, digest = registry.push_index(
            registry.repo("idx") + ":multi",
            [(arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
             (amd, {"os": "linux", "architecture": "amd64"})], docker=docker)
        for plat, want in (({"os": "linux", "architecture": "amd64"}, amd),
                           ({"os": "linux", "architecture": "arm64", "variant": "v8"}, arm)):
            store = ImageStore(os.path.join(tmpdir_k8sxti, f"s-{docker}-{plat['architecture']}"), platform=plat)
            got = store.pull(ref)
            assert got.id == want.id
            assert got.repo_digests == [f"{ref.rsplit(':', 1)[0]}@{digest}"]
            (layer,) = store.layers(got.id)
            with open(os.path.join(layer, "arch")) as f:
                assert f.read() == plat["architecture"]
            top = json.loads(store.content.read(digest))
            assert len(top["manifests"]) == 2


def test_pull_zstd_layer(registry, image_store):
    import subprocess

    raw = layer_tar({"z.txt": "zstd layer\n" * 1000})
    img = build.make_image([raw], compress=False)
    zst = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    layer = build.Blob("application/vnd.oci.image.layer.v1.tar+zstd", zst)
    manifest = json.loads(img.manifest.data)
    manifest["layers"] = [layer.descriptor()]
    img.layers = [layer]
    img.manifest = build.Blob(img.manifest.media_type, json.dumps(manifest).encode())
    got = image_store.pull(registry.push(registry.repo("zstd") + ":1", img))
    (path,) = image_store.layers(got.id)
    with open(os.path.join(path, "z.txt")) as f:
        assert f.read() == "zstd layer\n" * 1000


def test_pull_missing_and_bad_reference(registry, image_store):
    import pytest

    from k8sx.cri.images.errors import ImageNotFound, InvalidReference

    with pytest.raises(ImageNotFound):
        image_store.pull(registry.repo("absent") + ":nope")
    with pytest.raises(InvalidReference):
        image_store.pull("k8sxti/UPPER:x")
    assert image_store.list() == []
