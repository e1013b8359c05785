"""Side by side with containerd: the same images pulled by containerd's CRI plugin and by the store must
report the same id, repoTags, repoDigests, size and user, and unpack to the same layer directories
(paths, types, modes, owners, sizes, mtimes, whiteouts, opaque markers, xattrs)."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections import Counter

import pytest
from imagetools import Containerd, layer_tar, raw_tar

from k8sx.cri.images import build
from k8sx.cri.images.store import ImageStore


@pytest.fixture(scope="module")
def containerd(registry, tmp_path_factory):
    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix="k8sxti-ctrd-")
    c = Containerd(work, registry.host)
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


LAYER_MTIME = 1600000000  # every entry of the layers below; see tree()


def ti(name, type_=tarfile.REGTYPE, **kw):
    t = tarfile.TarInfo(name)
    t.type, t.mtime, t.mode = type_, LAYER_MTIME, kw.pop("mode", 0o644)
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def tree(top):
    """What a layer directory holds, in a comparable form.

    An mtime the layer did not set (a directory only implied by a deeper name, a whiteout device) is
    the unpacker's clock: shown as "unpack time", since containerd's and ours straddle a second now and then.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            xattrs = {}
            for x in os.listxattr(p, follow_symlinks=False):
                if x.startswith(("user.", "trusted.overlay.opaque")):
                    xattrs[x] = os.getxattr(p, x, follow_symlinks=False)
            out.append((os.path.relpath(p, top), kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if kind == stat.S_IFREG else 0,
                        LAYER_MTIME if int(st.st_mtime) == LAYER_MTIME else "unpack time", st.st_rdev,
                        os.readlink(p) if kind == stat.S_IFLNK else "", st.st_nlink if kind == stat.S_IFREG else 0,
                        tuple(sorted(xattrs.items()))))
    return tuple(sorted(out))


def inspect(containerd, ref):
    return json.loads(containerd.crictl("inspecti", "-o", "json", ref).stdout)["status"]


def test_same_names_ids_sizes_as_containerd(registry, containerd, tmpdir_k8sxti):
    amd = build.make_image([layer_tar({"a": "1"}), layer_tar({"b": "2"})], {"User": "www-data:50"},
                           architecture="amd64")
    arm = build.make_image([layer_tar({"a": "3"})], architecture="arm64")
    listed, index_digest = registry.push_index(registry.repo("cmp") + ":v1",
                                               [(arm, {"os": "linux", "architecture": "arm64"}),
                                                (amd, {"os": "linux", "architecture": "amd64"})], docker=True)
    single = registry.push(registry.repo("one") + ":v2", build.make_image([layer_tar({"x": "y"})], {"User": "1001"}))
    store = ImageStore(os.path.join(tmpdir_k8sxti, "s"), platform={"os": "linux", "architecture": "amd64"})
    for ref in (listed, single, f"{listed.rsplit(':', 1)[0]}@{index_digest}"):
        containerd.crictl("pull", ref)
        theirs = inspect(containerd, ref)
        ours = store.pull(ref)
        uid = theirs["uid"]["value"] if theirs.get("uid") else None
        assert (ours.id, ours.repo_tags, ours.repo_digests, str(ours.size), ours.uid, ours.username) == (
            theirs["id"], theirs["repoTags"], theirs["repoDigests"], theirs["size"],
            int(uid) if uid is not None else None, theirs["username"]), ref


def test_same_layer_directories_as_containerd(registry, containerd, tmpdir_k8sxti):
    base = raw_tar([
        (ti("etc", tarfile.DIRTYPE, mode=0o755), None), (ti("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n"),
        (ti("etc/gone"), b"to be whited out"), (ti("var", tarfile.DIRTYPE, mode=0o755), None),
        (ti("var/cache", tarfile.DIRTYPE, mode=0o750, uid=5, gid=6), None), (ti("var/cache/old"), b"old"),
        (ti("bin", tarfile.DIRTYPE, mode=0o755), None), (ti("bin/tool", mode=0o4755), b"\x7fELF"),
        (ti("bin/alias", tarfile.LNKTYPE, linkname="bin/tool", mode=0o4755), None),
        (ti("bin/sh", tarfile.SYMTYPE, linkname="/bin/tool", mode=0o777), None),
        (ti("data", tarfile.REGTYPE, uid=1000, gid=1000, mode=0o600, pax_headers={"SCHILY.xattr.user.k": "v"}),
         b"d" * 5000),
        (ti("pipe", tarfile.FIFOTYPE, mode=0o644), None),
    ])
    top = raw_tar([
        (ti("etc", tarfile.DIRTYPE, mode=0o755), None), (ti("etc/.wh.gone"), b""),
        (ti("var", tarfile.DIRTYPE, mode=0o755), None),
        (ti("var/cache", tarfile.DIRTYPE, mode=0o750, uid=5, gid=6), None), (ti("var/cache/.wh..wh..opq"), b""),
        (ti("var/cache/new"), b"new"), (ti("/abs/file"), b"absolute name"),
    ])
    img = build.make_image([base, top])
    ref = registry.push(registry.repo("trees") + ":1", img)
    containerd.crictl("pull", ref)
    store = ImageStore(os.path.join(tmpdir_k8sxti, "s"))
    ours = Counter(tree(d) for d in store.layers(store.pull(ref).id))
    snaps = os.path.join(containerd.dir, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    theirs = Counter(tree(os.path.join(snaps, n, "fs")) for n in os.listdir(snaps))
    assert len(ours) == 2 and all(len(t) >= 6 for t in ours)
    whiteouts = [e for t in ours for e in t if e[0] == "etc/gone"]
    assert sorted(e[1] for e in whiteouts) == [stat.S_IFCHR, stat.S_IFREG]  # the file, and its whiteout above
    assert set(ours) <= set(theirs), (set(ours) - set(theirs), set(theirs) - set(ours))
