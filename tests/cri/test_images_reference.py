"""Reference parsing and normalisation must agree with containerd's (docker/distribution's) grammar."""

from __future__ import annotations

import pytest

from k8sx.cri.images.errors import InvalidReference
from k8sx.cri.images.reference import normalize, parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("ref", "want"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("someone/app:v1", "docker.io/someone/app:v1"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/x:y", "[::1]:5000/x:y"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"gcr.io/p/img:tag@{D}", f"gcr.io/p/img:tag@{D}"),
    ("a.b/c_d/e__f/g-h---i:T_a.g-1", "a.b/c_d/e__f/g-h---i:T_a.g-1"),
])
def test_normalize(ref, want):
    assert normalize(ref) == want


def test_parts():
    r = parse(f"localhost:5000/team/app:v2@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("localhost:5000", "team/app", "v2", D)
    assert r.object == D and r.with_digest(D) == f"localhost:5000/team/app@{D}"
    assert parse("busybox").object == "latest"


@pytest.mark.parametrize("ref", [
    "", "  ", "Busybox", "docker.io/library/UPPER", "a/b:", "a/b:-tag", "a//b", "a/b/", "/a",
    "busybox@sha256:abc", "busybox@md5:" + "a" * 32, "a" * 64, "busybox:" + "t" * 129, "x/" + "y" * 260,
    "a..b/c", "foo_/bar",
])
def test_invalid(ref):
    with pytest.raises(InvalidReference):
        parse(ref)
