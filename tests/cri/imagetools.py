"""Test helpers for images: a real OCI registry on loopback, and layer tars made to order.

The fixtures that use them are in ``tests/cri/conftest.py``.

``registry`` (session scope) runs Debian's ``docker-registry`` (distribution 2.8) on
``127.0.0.1:<free port>``, storage in a ``k8sxti-reg-*`` temp dir, and stops it after the session.
``auth_registry`` is a second one that wants basic auth (htpasswd, bcrypt) for user ``k8sxti`` /
``AUTH_PASSWORD``. Both are :class:`Registry` objects with helpers to push images that
:mod:`k8sx.cri.images.build` makes::

    img = build.make_image([layer_tar(...)], {"Cmd": ["sh"]})
    ref = registry.push("k8sxti/app:1", img)          # -> "127.0.0.1:PORT/k8sxti/app:1"
    registry.blob_gets(img.layers[0].digest)           # GETs the registry served for that blob

``image_store`` gives an empty :class:`~k8sx.cri.images.store.ImageStore` in a ``k8sxti-store-*`` dir.
Pushing under a fresh repository name per test (``registry.repo("name")``) keeps tests independent.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid

import pytest

from k8sx.cri.images import build
from k8sx.cri.images.registry import Credentials, RegistryClient

REGISTRY_BIN = "/usr/bin/docker-registry"
AUTH_USER = "k8sxti"
AUTH_PASSWORD = "k8sxti-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bcrypt(password: str) -> str:
    """An htpasswd bcrypt hash via libxcrypt (the stdlib ``crypt`` module; deprecated, present in 3.11/3.12)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: fast tests


class Registry:
    """A running ``docker-registry`` on loopback and helpers to push test images to it."""

    def __init__(self, tag: str, htpasswd: bool = False) -> None:
        if not os.path.exists(REGISTRY_BIN):
            pytest.fail(f"{REGISTRY_BIN} missing: apt-get install docker-registry")
        self.dir = tempfile.mkdtemp(prefix=f"k8sxti-reg-{tag}-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.creds = Credentials(AUTH_USER, AUTH_PASSWORD) if htpasswd else None
        auth = ""
        if htpasswd:
            hashed = _bcrypt(AUTH_PASSWORD)
            with open(os.path.join(self.dir, "htpasswd"), "w") as f:
                f.write(f"{AUTH_USER}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: k8sxti\n    path: {self.dir}/htpasswd\n"
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.data}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: {self.host}\n  secret: k8sxti-{uuid.uuid4().hex}\n{auth}"
            )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", config], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 from the auth registry: it is up
            except OSError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    with open(self.log_path) as f:
                        tail = f.read()[-2000:]
                    self.stop()
                    raise RuntimeError(f"docker-registry did not start: {tail}") from e
                time.sleep(0.05)
        self.client = RegistryClient()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def repo(self, name: str) -> str:
        """A fresh repository path on this registry: ``127.0.0.1:PORT/k8sxti/<name>-<random>``."""
        return f"{self.host}/k8sxti/{name}-{uuid.uuid4().hex[:8]}"

    def push(self, ref: str, image: build.BuiltImage) -> str:
        """Push ``image`` as ``ref`` (a full ref or a path on this registry); returns the full reference."""
        full = ref if ref.startswith(self.host) else f"{self.host}/{ref}"
        build.push(self.client, full, image, self.creds)
        return full

    def push_index(self, ref: str, entries: list[tuple[build.BuiltImage, dict[str, str]]], docker: bool = False,
                   ) -> tuple[str, str]:
        """Push an index over ``entries``; returns ``(full reference, index digest)``."""
        full = ref if ref.startswith(self.host) else f"{self.host}/{ref}"
        return full, build.push_index(self.client, full, entries, docker=docker, creds=self.creds)

    def blob_path(self, digest: str) -> str:
        """Where the registry keeps a blob on disk (tests corrupt it to prove digest checks)."""
        h = digest.split(":", 1)[1]
        return os.path.join(self.data, "docker/registry/v2/blobs/sha256", h[:2], h, "data")

    def blob_gets(self, digest: str) -> int:
        """How many successful GETs of blob ``digest`` the access log shows."""
        with open(self.log_path, errors="replace") as f:
            text = f.read()
        return len(re.findall(rf'"GET /v2/[^ ]+/blobs/{re.escape(digest)} HTTP/1\.1" 200', text))


def layer_tar(files: dict[str, bytes | str | None], *, mode: int = 0o644) -> bytes:
    """An uncompressed layer tar: ``{"path": b"content"}``; a value ``None`` makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.mtime = build.EPOCH
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                raw = data.encode() if isinstance(data, str) else data
                ti.size, ti.mode = len(raw), mode
                tf.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def raw_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A layer tar from hand-made members (for the malicious-layer tests)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


