"""``k8sx runtime import`` end to end, with the demo's image: the host's static busybox, imported offline,
then mounted the way the runtime will (overlay of ``ImageStore.layers``) and run with chroot."""

from __future__ import annotations

import os
import subprocess

import pytest

from k8sx.cri.images import build
from k8sx.cri.images.store import ImageStore, images_dir

BUSYBOX = "/bin/busybox"


@pytest.fixture
def busybox_image(tmpdir_k8sxti):
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is required (apt-get install busybox-static)")
    rootfs = os.path.join(tmpdir_k8sxti, "rootfs")
    build.busybox_rootfs(rootfs, BUSYBOX)
    img = build.image_from_dir(rootfs, {"Cmd": ["sh"], "Env": ["PATH=/bin"]})
    tar = os.path.join(tmpdir_k8sxti, "busybox-oci.tar")
    build.write_oci_layout(tar, [(img, "k8sxti.local/demo/busybox:latest")])
    return img, tar


def test_import_cli_and_run_from_overlay(k8sx_bin, tmpdir_k8sxti, busybox_image):
    img, tar = busybox_image
    root = os.path.join(tmpdir_k8sxti, "state")
    out = subprocess.run([k8sx_bin, "runtime", "import", tar, "--root", root], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Imported k8sxti.local/demo/busybox:latest ({img.id})"
    again = subprocess.run([k8sx_bin, "runtime", "import", "-q", tar, "--root", root], capture_output=True, text=True)
    assert again.stdout.strip() == img.id  # idempotent
    store = ImageStore(images_dir(root))
    (got,) = store.list()
    layers = store.layers(got.id)
    merged, upper, work = (os.path.join(tmpdir_k8sxti, n) for n in ("merged", "upper", "work"))
    for d in (merged, upper, work):
        os.makedirs(d)
    opts = f"lowerdir={':'.join(reversed(layers))},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "k8sxti-overlay", "-o", opts, merged], check=True)
    try:
        run = subprocess.run(["chroot", merged, "/bin/sh", "-c", "echo hello from $(busybox basename /bin/ls)"],
                             capture_output=True, text=True, timeout=30)
        assert run.stdout.strip() == "hello from ls", run.stderr
    finally:
        subprocess.run(["umount", merged], check=True)


def test_build_module_writes_a_docker_archive_that_imports(tmpdir_k8sxti):
    import sys

    out = os.path.join(tmpdir_k8sxti, "bb-docker.tar")
    run = subprocess.run([sys.executable, "-m", "k8sx.cri.images.build", "busybox", out, "--docker",
                          "--name", "k8sxti.local/bb:1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    (img,) = ImageStore(os.path.join(tmpdir_k8sxti, "s")).import_archive(out)
    assert img.repo_tags == ["k8sxti.local/bb:1"] and run.stdout.strip().endswith(f"({img.id})")
    bad = subprocess.run([sys.executable, "-m", "k8sx.cri.images.build", "busybox", out, "--busybox",
                          os.path.join(tmpdir_k8sxti, "nope")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "not found" in bad.stderr


def test_import_cli_bad_input(k8sx_bin, tmpdir_k8sxti):
    junk = os.path.join(tmpdir_k8sxti, "junk.tar")
    with open(junk, "w") as f:
        f.write("junk")
    for path in (junk, os.path.join(tmpdir_k8sxti, "absent.tar")):
        out = subprocess.run([k8sx_bin, "runtime", "import", path, "--root", tmpdir_k8sxti],
                             capture_output=True, text=True)
        assert out.returncode != 0
        assert "Traceback" not in out.stderr and path in out.stderr
