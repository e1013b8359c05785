"""Fixtures for the CRI tests: a real OCI registry on loopback, and image stores in temp dirs.

``registry`` (session scope) runs Debian's ``docker-registry`` (distribution 2.8) on
``127.0.0.1:<free port>``, storage in a ``k8sxti-reg-*`` temp dir, and stops it after the session.
``auth_registry`` is a second one that wants basic auth (htpasswd, bcrypt) for user
``imagetools.AUTH_USER`` / ``imagetools.AUTH_PASSWORD``; ``token_registry`` wants bearer tokens from a
small token server (``imagetools.TokenServer``: JWTs signed with openssl) that knows the same user.
All are :class:`imagetools.Registry` objects with helpers to push images that :mod:`k8sx.cri.images.build` makes::

    from imagetools import layer_tar
    img = build.make_image([layer_tar({"hello": "hi"})], {"Cmd": ["sh"]})
    ref = registry.push(registry.repo("app") + ":1", img)   # -> "127.0.0.1:PORT/k8sxti/app-<rand>:1"
    registry.blob_gets(img.layers[0].digest)                 # GETs the registry served for that blob

``image_store`` gives an empty :class:`~k8sx.cri.images.store.ImageStore` in a ``k8sxti-*`` dir.
Push under a fresh repository name per test (``registry.repo("name")``) to keep tests independent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from imagetools import Registry
from ocitools import oci, oci_layers  # noqa: F401  (fixtures of the OCI layer tests: runc + conmon)
from runtimetools import busybox_layout, runtime_node  # noqa: F401  (the runtime tests' k8sx runtime serve)

from k8sx.cri.images.store import ImageStore


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A plain-HTTP registry without auth, for the whole session."""
    r = Registry("open")
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[Registry]:
    """A registry that wants basic auth (``AUTH_USER``/``AUTH_PASSWORD``)."""
    r = Registry("auth", htpasswd=True)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def token_registry() -> Iterator[Registry]:
    """A registry with bearer-token auth; its token server is ``token_registry.token_server``."""
    r = Registry("token", token=True)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def tmpdir_k8sxti() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="k8sxti-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def image_store(tmpdir_k8sxti: str) -> ImageStore:
    return ImageStore(os.path.join(tmpdir_k8sxti, "store"))


