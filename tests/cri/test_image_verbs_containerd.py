"""The same image verbs against containerd's CRI socket: k8sx is a client for any runtime, not only its own.

A private containerd (Debian's 1.6, CRI plugin only; no CNI, no network namespace) runs in a k8sxtc-*
dir with its registry hosts pointed at the test registry on loopback. The verbs must work against it,
report what our server reports for the same image, and (when crictl is installed) print what crictl
prints.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from critools import containerd, k8sx, serving, tempdir
from imagetools import layer_tar

from k8sx.cri.images import build


@pytest.fixture(scope="module")
def endpoints(registry):
    """(containerd endpoint, our endpoint), both serving images from the test registry."""
    if shutil.which("containerd") is None:
        pytest.fail("containerd missing: apt-get install containerd")
    d1, d2 = tempdir(), tempdir()
    try:
        with containerd(d1, [registry.host]) as ctrd, serving(d2) as ours:
            yield ctrd, ours.endpoint
    finally:
        shutil.rmtree(d1, ignore_errors=True)
        shutil.rmtree(d2, ignore_errors=True)


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def comparable(image: dict) -> dict:
    """The fields both runtimes must agree on (size accounting and ``spec`` differ between runtimes)."""
    return {k: image[k] for k in ("id", "repoTags", "repoDigests", "uid", "username", "pinned")}


def test_verbs_against_containerd_match_ours(endpoints, registry):
    ctrd, ours = endpoints
    img = build.make_image([layer_tar({"etc/": None, "etc/k8sxtc": "c"}), layer_tar({"x": "y" * 5000})],
                           {"Cmd": ["sh"], "User": "1002"}, docker=True)
    ref = registry.push(registry.repo("ctrd") + ":v1", img)
    name = ref.rsplit(":", 1)[0]

    for ep in (ctrd, ours):
        assert ok(k8sx(ep, "pull", ref)) == f"Image is up to date for {img.id}\n"
    assert ok(k8sx(ctrd, "version")).startswith("Version:  0.1.0\nRuntimeName:  containerd\n")

    listed = {}
    for ep in (ctrd, ours):
        images = json.loads(ok(k8sx(ep, "images", "-o", "json", name)))["images"]
        assert [i["id"] for i in images] == [img.id], ep
        listed[ep] = comparable(images[0])
        assert img.id[7:20] in ok(k8sx(ep, "images", name))
    assert listed[ctrd] == listed[ours]

    statuses = {ep: json.loads(ok(k8sx(ep, "inspecti", ref))) for ep in (ctrd, ours)}
    assert comparable(statuses[ctrd]["status"]) == comparable(statuses[ours]["status"])
    assert statuses[ctrd]["info"]["chainID"] == statuses[ours]["info"]["chainID"]
    assert statuses[ctrd]["info"]["imageSpec"] == statuses[ours]["info"]["imageSpec"]

    fs = json.loads(ok(k8sx(ctrd, "imagefsinfo")))["status"]
    assert fs["fsId"]["mountpoint"].endswith("io.containerd.snapshotter.v1.overlayfs")

    if shutil.which("crictl"):
        # byte-for-byte what crictl prints for the same calls against containerd
        base = ["crictl", "--runtime-endpoint", ctrd, "--image-endpoint", ctrd, "--timeout", "10s"]
        for args in (["images", "-o", "json", name], ["inspecti", ref], ["version"], ["images", "--digests", "-q"],
                     ["images", "-o", "yaml", name], ["inspecti", "-o", "yaml", ref],
                     ["inspecti", "-q", "-o", "json", ref], ["images", name], ["images", "--digests", "--no-trunc"],
                     ["inspecti", "-q", "-o", "table", ref], ["inspecti", "-o", "table", ref]):
            # (not compared: -v, where crictl prints Go structs such as "Uid: &Int64Value{Value:1002,}")
            want = subprocess.run(base + args, capture_output=True, text=True, timeout=60)
            assert want.returncode == 0, want.stderr
            assert ok(k8sx(ctrd, *args)) == want.stdout, args

    assert ok(k8sx(ours, "rmi", ref)) == f"Deleted: {ref}\n"
    # --prune asks containerd's RuntimeService which images containers use (none here)
    assert f"Deleted: {ref}\n" in ok(k8sx(ctrd, "rmi", "--prune"))
    for ep in (ctrd, ours):
        assert ok(k8sx(ep, "images", "-q", name)) == ""
    r = k8sx(ctrd, "rmi", ref)
    assert r.returncode == 1 and "no such image" in r.stderr
