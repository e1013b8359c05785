"""Unpack is the security boundary: malicious layers are refused or confined, the host stays untouched.

Every test puts sentinel files *outside* the destination rootfs (next to it, in the test's k8sxti
temp dir) and checks them byte for byte afterwards, plus ``/etc/passwd``'s content and link count.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile

import pytest
from imagetools import layer_tar, raw_tar

from k8sx.cri.images import build
from k8sx.cri.images.errors import DigestMismatch, UnsafeLayer
from k8sx.cri.images.unpack import unpack_layer

SENTINEL = b"host file, must not change\n"


@pytest.fixture
def host(tmpdir_k8sxti):
    """A fake host around the rootfs: ``outside/sentinel`` next to ``rootfs/``; checked after each test."""
    outside = os.path.join(tmpdir_k8sxti, "outside")
    os.makedirs(outside)
    sentinel = os.path.join(outside, "sentinel")
    with open(sentinel, "wb") as f:
        f.write(SENTINEL)
    rootfs = os.path.join(tmpdir_k8sxti, "rootfs")
    os.makedirs(rootfs)
    passwd = os.stat("/etc/passwd")
    with open("/etc/passwd", "rb") as f:
        passwd_hash = hashlib.sha256(f.read()).hexdigest()
    yield {"root": tmpdir_k8sxti, "outside": outside, "sentinel": sentinel, "rootfs": rootfs}
    with open(sentinel, "rb") as f:
        assert f.read() == SENTINEL, "the host sentinel was modified"
    assert sorted(os.listdir(outside)) == ["sentinel"], "something was written next to the host sentinel"
    assert set(os.listdir(tmpdir_k8sxti)) <= {"layer", "outside", "rootfs", "store"}
    with open("/etc/passwd", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == passwd_hash
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink


def ti(name, type_=tarfile.REGTYPE, linkname="", mode=0o644, **kw):
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mode, t.mtime = type_, linkname, mode, build.EPOCH
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def unpack(host, members, expected=None):
    data = raw_tar(members)
    path = os.path.join(host["root"], "layer")
    with open(path, "wb") as f:
        f.write(build.gzip_bytes(data))
    return unpack_layer(path, host["rootfs"], expected)


def test_dotdot_traversal_refused(host):
    with pytest.raises(UnsafeLayer, match=r"'\.\.'"):
        unpack(host, [(ti("ok"), b"fine"), (ti("../outside/sentinel"), b"pwned")])
    with pytest.raises(UnsafeLayer):
        unpack(host, [(ti("a/../../outside/new"), b"pwned")])


def test_absolute_path_confined(host):
    stats = unpack(host, [(ti(host["sentinel"]), b"pwned")])
    assert stats.entries == 1
    inside = os.path.join(host["rootfs"], host["sentinel"].lstrip("/"))
    with open(inside, "rb") as f:
        assert f.read() == b"pwned"


def test_symlink_escape_then_write_through_it_confined(host):
    members = [
        (ti("abs", tarfile.SYMTYPE, linkname=host["outside"]), None),
        (ti("abs/sentinel"), b"pwned via absolute symlink"),
        (ti("rel", tarfile.SYMTYPE, linkname="../../../../../../../.." + host["outside"]), None),
        (ti("rel/other"), b"pwned via relative symlink"),
        (ti("root", tarfile.SYMTYPE, linkname="/"), None),
        (ti("root/etc/passwd"), b"pwned"),
    ]
    unpack(host, members)
    confined = os.path.join(host["rootfs"], host["outside"].lstrip("/"))
    assert sorted(os.listdir(confined)) == ["other", "sentinel"]
    assert os.readlink(os.path.join(host["rootfs"], "abs")) == host["outside"]  # link kept verbatim
    with open(os.path.join(host["rootfs"], "etc", "passwd"), "rb") as f:
        assert f.read() == b"pwned"


def test_entry_replaces_symlink_instead_of_following_it(host):
    unpack(host, [(ti("s", tarfile.SYMTYPE, linkname=host["sentinel"]), None), (ti("s"), b"pwned")])
    p = os.path.join(host["rootfs"], "s")
    assert stat.S_ISREG(os.lstat(p).st_mode)


def test_hardlink_to_host_file_refused(host):
    for target in ("/etc/passwd", "../../../../../../etc/passwd", host["sentinel"]):
        with pytest.raises(UnsafeLayer):
            unpack(host, [(ti("passwd", tarfile.LNKTYPE, linkname=target), None)])
    with pytest.raises(UnsafeLayer):  # through a symlink to / : still resolved inside the rootfs
        unpack(host, [(ti("r2", tarfile.SYMTYPE, linkname="/"), None),
                      (ti("h", tarfile.LNKTYPE, linkname="r2/outside-of-layer"), None)])


def test_write_through_hardlink_does_not_modify_target(host):
    unpack(host, [(ti("a"), b"original"), (ti("b", tarfile.LNKTYPE, linkname="a"), None), (ti("b"), b"new")])
    with open(os.path.join(host["rootfs"], "a"), "rb") as f:
        assert f.read() == b"original"
    with open(os.path.join(host["rootfs"], "b"), "rb") as f:
        assert f.read() == b"new"


def test_hardlinks_inside_layer_kept(host):
    unpack(host, [(ti("bin", tarfile.DIRTYPE, mode=0o755), None), (ti("bin/busybox", mode=0o755), b"\x7fELF"),
                  (ti("bin/sh", tarfile.LNKTYPE, linkname="bin/busybox"), None)])
    a, b = (os.stat(os.path.join(host["rootfs"], "bin", n)) for n in ("busybox", "sh"))
    assert a.st_ino == b.st_ino and a.st_nlink == 2


def test_device_nodes_skipped(host):
    stats = unpack(host, [(ti("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
                          (ti("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None),
                          (ti("fifo", tarfile.FIFOTYPE), None)])
    assert stats.skipped_devices == 2
    assert not os.path.lexists(os.path.join(host["rootfs"], "dev", "null"))
    assert not os.path.lexists(os.path.join(host["rootfs"], "dev", "sda"))
    assert stat.S_ISFIFO(os.lstat(os.path.join(host["rootfs"], "fifo")).st_mode)


def test_whiteouts_aimed_outside(host):
    with pytest.raises(UnsafeLayer):
        unpack(host, [(ti("../outside/.wh.sentinel"), b"")])
    with pytest.raises(UnsafeLayer):
        unpack(host, [(ti("x/.wh..."), b"")])
    members = [
        (ti(os.path.join(host["outside"], ".wh.sentinel")), b""),  # absolute: confined
        (ti("l", tarfile.SYMTYPE, linkname=host["outside"]), None),  # through a symlink: confined
        (ti("l/.wh.sentinel"), b""),
        (ti("l/.wh..wh..opq"), b""),
    ]
    stats = unpack(host, members)
    assert stats.whiteouts == 3
    confined = os.path.join(host["rootfs"], host["outside"].lstrip("/"))
    st = os.lstat(os.path.join(confined, "sentinel"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(confined, "trusted.overlay.opaque") == b"y"
    with pytest.raises(OSError):
        os.getxattr(host["outside"], "trusted.overlay.opaque")


def test_metadata_kept_and_dangerous_xattrs_dropped(host):
    f = ti("bin/tool", mode=0o4755, uid=1234, gid=4321, mtime=1600000000)
    f.pax_headers = {"SCHILY.xattr.user.k8sxti": "v", "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                     "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00"
                     "\x00\x00\x00\x00\x00\x00"}
    d = ti("bin", tarfile.DIRTYPE, mode=0o711, uid=7, gid=8, mtime=1500000000)
    stats = unpack(host, [(d, None), (f, b"#!/bin/sh\n")])
    p = os.path.join(host["rootfs"], "bin", "tool")
    st = os.lstat(p)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (1234, 4321, 0o4755, 1600000000)
    assert os.getxattr(p, "user.k8sxti") == b"v"
    assert "trusted.overlay.redirect" not in os.listxattr(p)
    assert "security.capability" in os.listxattr(p)
    assert stats.dropped_xattrs == 1
    dst = os.lstat(os.path.join(host["rootfs"], "bin"))
    assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode), int(dst.st_mtime)) == (7, 8, 0o711, 1500000000)


def test_modes_of_root_owned_files(host):
    unpack(host, [(ti("suid", mode=0o4755), b"x"), (ti("open", mode=0o777), b"x"), (ti("plain", mode=0o640), b"x"),
                  (ti("sticky", tarfile.DIRTYPE, mode=0o1777), None)])
    modes = {n: stat.S_IMODE(os.lstat(os.path.join(host["rootfs"], n)).st_mode)
             for n in ("suid", "open", "plain", "sticky")}
    assert modes == {"suid": 0o4755, "open": 0o777, "plain": 0o640, "sticky": 0o1777}


def test_symlink_loop_and_links_to_symlinks(host):
    with pytest.raises(UnsafeLayer, match="symlinks"):
        unpack(host, [(ti("a", tarfile.SYMTYPE, linkname="b"), None), (ti("b", tarfile.SYMTYPE, linkname="a"), None),
                      (ti("a/x"), b"loop")])
    fresh = os.path.join(host["rootfs"], "fresh")
    os.mkdir(fresh)
    path = os.path.join(host["root"], "layer")
    with open(path, "wb") as f:
        f.write(raw_tar([(ti("s", tarfile.SYMTYPE, linkname="/etc/passwd"), None),
                         (ti("h", tarfile.LNKTYPE, linkname="s"), None)]))
    unpack_layer(path, fresh)
    assert os.readlink(os.path.join(fresh, "h")) == "/etc/passwd"  # the link itself, resolved in the container


def test_gzip_members_concatenated_and_truncated(host):
    import gzip

    from k8sx.cri.images.errors import ImageError

    data = raw_tar([(ti("big"), os.urandom(3 << 20)), (ti("small"), b"s")])
    path = os.path.join(host["root"], "layer")
    with open(path, "wb") as f:  # two gzip members, as pigz or a concatenating tool writes them
        f.write(gzip.compress(data[: len(data) // 3]) + gzip.compress(data[len(data) // 3 :]))
    want = "sha256:" + hashlib.sha256(data).hexdigest()
    assert unpack_layer(path, host["rootfs"], want).diff_id == want
    assert os.path.getsize(os.path.join(host["rootfs"], "big")) == 3 << 20
    with open(path, "wb") as f:
        f.write(gzip.compress(data)[: 1 << 20])
    cut = os.path.join(host["rootfs"], "cut")
    os.mkdir(cut)
    with pytest.raises(ImageError, match="cannot unpack"):
        unpack_layer(path, cut)
    zst = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    with open(path, "wb") as f:
        f.write(zst[: len(zst) // 2])
    with pytest.raises(ImageError, match="zstd"):
        unpack_layer(path, cut)


def test_diff_id_verified(host):
    data = layer_tar({"a": "a"})
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(host["root"], "layer")
    with open(path, "wb") as f:
        f.write(data)  # an uncompressed layer works too
    assert unpack_layer(path, host["rootfs"], good).diff_id == good
    again = os.path.join(host["rootfs"], "again")
    os.mkdir(again)
    with pytest.raises(DigestMismatch):
        unpack_layer(path, again, "sha256:" + "0" * 64)


def test_malicious_layer_refused_by_pull_leaves_nothing(registry, image_store, host):
    bad = raw_tar([(ti("etc", tarfile.DIRTYPE, mode=0o755), None), (ti("../../escape"), b"pwned")])
    img = build.make_image([layer_tar({"ok": "ok"}), bad])
    ref = registry.push(registry.repo("evil") + ":1", img)
    with pytest.raises(UnsafeLayer):
        image_store.pull(ref)
    assert image_store.list() == []
    assert image_store.content.all() == [] and image_store.snapshots.all() == []
    assert os.listdir(image_store.content.ingest_dir) == []
    for dirpath, dirnames, filenames in os.walk(host["root"]):
        assert "escape" not in filenames + dirnames, dirpath
