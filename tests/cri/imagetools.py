"""Test helpers for images: a real OCI registry on loopback, layer tars made to order, a private containerd.

:class:`Registry` runs Debian's ``docker-registry`` (optionally with htpasswd or token auth, see
:class:`TokenServer`) and pushes images made by :mod:`k8sx.cri.images.build`; :class:`Containerd`
runs a private containerd (CRI plugin, own root and socket) for the tests and ``bench/pull.py`` that
compare with it. The fixtures over them, with an example, are in ``tests/cri/conftest.py``.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from k8sx.cri.images import build
from k8sx.cri.images.registry import Credentials, RegistryClient

REGISTRY_BIN = "/usr/bin/docker-registry"
AUTH_USER = "k8sxti"
AUTH_PASSWORD = "k8sxti-secret"
REFRESH_TOKEN = "k8sxti-refresh-token"


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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A bearer-token server for ``docker-registry``'s ``auth: token`` (JWT, RS256, signed by openssl).

    No Debian package ships one, so the tests carry this small one: it checks basic credentials
    (``AUTH_USER``/``AUTH_PASSWORD``) or a refresh token (``REFRESH_TOKEN``) and grants the requested
    repository scope; anonymous callers get a token without access, which the registry refuses.
    ``issued`` counts tokens handed out with access.
    """

    SERVICE = "k8sxti-registry"
    ISSUER = "k8sxti-token-issuer"

    def __init__(self, directory: str) -> None:
        self.key = os.path.join(directory, "token.key")
        self.cert = os.path.join(directory, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out",
                        self.cert, "-days", "2", "-subj", "/CN=k8sxti-token"], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                self._answer(q, self.headers.get("Authorization", ""))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._answer(urllib.parse.parse_qs(body), "", post=True)

            def _answer(self, q: dict[str, list[str]], authz: str, post: bool = False) -> None:
                ok = False
                if post:
                    ok = q.get("refresh_token") == [REFRESH_TOKEN]
                elif authz.startswith("Basic "):
                    ok = base64.b64decode(authz[6:]).decode() == f"{AUTH_USER}:{AUTH_PASSWORD}"
                if authz and not ok:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    kind, name, actions = scope.split(":")
                    if ok:
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                server.issued += bool(access)
                body = json.dumps({"token": server.sign(AUTH_USER if ok else "", access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def sign(self, subject: str, access: list[dict]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.ISSUER, "sub": subject, "aud": self.SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Registry:
    """A running ``docker-registry`` on loopback and helpers to push test images to it."""

    def __init__(self, tag: str, htpasswd: bool = False, token: bool = False) -> None:
        if not os.path.exists(REGISTRY_BIN):
            pytest.fail(f"{REGISTRY_BIN} missing: apt-get install docker-registry")
        self.dir = tempfile.mkdtemp(prefix=f"k8sxti-reg-{tag}-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.creds = Credentials(AUTH_USER, AUTH_PASSWORD) if htpasswd or token else None
        self.token_server: TokenServer | None = None
        auth = ""
        if token:
            self.token_server = TokenServer(self.dir)
            ts = self.token_server
            auth = (f"auth:\n  token:\n    realm: {ts.realm}\n    service: {ts.SERVICE}\n    issuer: {ts.ISSUER}\n"
                    f"    rootcertbundle: {ts.cert}\n")
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
        if self.token_server:
            self.token_server.stop()
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


class Containerd:
    """A private containerd (CRI plugin) with its registry mirror config, torn down on stop()."""

    def __init__(self, work: str, registry_host: str) -> None:
        self.dir = os.path.join(work, "containerd")
        certs = os.path.join(self.dir, "certs.d", registry_host)
        os.makedirs(certs)
        with open(os.path.join(certs, "hosts.toml"), "w") as f:
            f.write(f'server = "http://{registry_host}"\n\n[host."http://{registry_host}"]\n'
                    '  capabilities = ["pull", "resolve"]\n')
        self.sock = os.path.join(self.dir, "containerd.sock")
        conf = os.path.join(self.dir, "config.toml")
        with open(conf, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8sxti.invalid/pause:none"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{self.dir}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{self.dir}/certs.d"
""")
        self.log = open(os.path.join(self.dir, "containerd.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["containerd", "--config", conf], stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.crictl("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("containerd did not come up")

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["crictl", "--runtime-endpoint", f"unix://{self.sock}", "--image-endpoint",
                               f"unix://{self.sock}", "--timeout", "60s", *args], capture_output=True, text=True,
                              check=check)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        subprocess.run(["umount", "-R", os.path.join(self.dir, "root")], stderr=subprocess.DEVNULL, check=False)
