"""A client for the OCI distribution API (what ``docker pull`` and containerd speak), on the stdlib only.

It resolves a reference to one platform's manifest (following OCI indexes and Docker manifest lists),
fetches blobs, and verifies the digest of everything it reads. Where to connect comes from a
registries configuration laid out like containerd's ``certs.d`` (see :class:`HostsConfig`); who we are
comes from the pull request's credentials or a docker ``config.json``; bearer-token and basic auth are
negotiated from the registry's ``WWW-Authenticate`` challenge. Transient failures are retried with
exponential backoff. It can also push (monolithic uploads), which the tests and the demo use.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import platform
import re
import socket
import ssl
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

from k8sx.cri.images.errors import DigestMismatch, ImageNotFound, RegistryError
from k8sx.cri.images.reference import DEFAULT_DOMAIN, Reference

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
MANIFEST_MAX = 4 << 20
RETRIES = 4
BACKOFF = 0.2
TIMEOUT = 30.0
LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}

T = TypeVar("T")


def host_platform() -> dict[str, str]:
    """The platform this node runs (``{"os": "linux", "architecture": "amd64"}``), used to pick from indexes."""
    machine = platform.machine()
    out = {"os": "linux", "architecture": _ARCH.get(machine, machine)}
    if machine == "armv7l":
        out["variant"] = "v7"
    elif machine == "aarch64":
        out["variant"] = "v8"
    return out


class Transient(RegistryError):
    """A failure worth retrying (connection reset, 5xx, 429)."""


def with_retries(fn: Callable[[], T], attempts: int = RETRIES, backoff: float = BACKOFF) -> T:
    """Call ``fn`` and retry on :class:`Transient` with exponential backoff (0.2 s, 0.4 s, 0.8 s ...)."""
    for i in range(attempts):
        try:
            return fn()
        except Transient:
            if i == attempts - 1:
                raise
            time.sleep(backoff * (2**i))
    raise AssertionError("unreachable")


@dataclass
class Endpoint:
    """One place to fetch a registry's content from: a mirror or the server itself."""

    url: str  # scheme://host[:port][/prefix], no trailing slash
    capabilities: tuple[str, ...] = ("pull", "resolve")
    skip_verify: bool = False
    ca: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")


class HostsConfig:
    """Registry hosts in containerd's ``certs.d`` layout: ``<dir>/<host[:port]>/hosts.toml``.

    Each ``hosts.toml`` may hold ``server = "https://..."`` and ``[host."<url>"]`` tables (mirrors,
    tried first, in file order) with ``capabilities`` (``pull``, ``resolve``), ``skip_verify``, ``ca``
    and ``header``; without ``server`` the host's default comes after the mirrors, as in containerd.
    A URL with ``http://`` is a plain-HTTP registry. ``_default/hosts.toml`` applies to
    hosts without their own directory. Without a file, ``docker.io`` goes to
    ``https://registry-1.docker.io``, loopback hosts to ``http://`` (as containerd allows), others to
    ``https://<host>``.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        if path and not os.path.isdir(path):
            raise RegistryError(f"registries config {path}: not a directory (expected containerd's certs.d layout)")

    def endpoints(self, host: str) -> list[Endpoint]:
        data = self._load(host)
        if data is None:
            return [self._default(host)]
        eps: list[Endpoint] = []
        for url, opts in (data.get("host") or {}).items():
            eps.append(self._endpoint(url, opts if isinstance(opts, dict) else {}))
        server = data.get("server")
        eps.append(self._endpoint(server, data) if server else self._default(host))  # after the mirrors
        return eps

    def _load(self, host: str) -> dict[str, Any] | None:
        if not self.path:
            return None
        for name in (host.replace("[", "").replace("]", ""), "_default"):
            f = os.path.join(self.path, name, "hosts.toml")
            if os.path.isfile(f):
                try:
                    with open(f, "rb") as fh:
                        return tomllib.load(fh)
                except (OSError, tomllib.TOMLDecodeError) as e:
                    raise RegistryError(f"registries config {f}: {e}") from e
        return None

    @staticmethod
    def _endpoint(url: str, opts: dict[str, Any]) -> Endpoint:
        url = url.rstrip("/")
        if "://" not in url:
            url = "https://" + url
        caps = opts.get("capabilities", ["pull", "resolve"])
        headers = {k: (v[0] if isinstance(v, list) else str(v)) for k, v in (opts.get("header") or {}).items()}
        ca = opts.get("ca")
        return Endpoint(url, tuple(caps), bool(opts.get("skip_verify", False)), ca if isinstance(ca, str) else None,
                        headers)

    @staticmethod
    def _default(host: str) -> Endpoint:
        if host == DEFAULT_DOMAIN:
            return Endpoint("https://registry-1.docker.io")
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        scheme = "http" if hostname in LOOPBACK else "https"
        return Endpoint(f"{scheme}://{host}")


@dataclass
class Credentials:
    """What we can authenticate with: a user/password pair, an identity (refresh) token or a bearer token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def from_auth(cls, auth: Any) -> Credentials | None:
        """From a CRI ``AuthConfig``-shaped object (``username, password, auth, identity_token, registry_token``)."""
        if auth is None:
            return None
        user, pw = getattr(auth, "username", "") or "", getattr(auth, "password", "") or ""
        if getattr(auth, "auth", ""):
            user, pw = _decode_basic(auth.auth)
        c = cls(user, pw, getattr(auth, "identity_token", "") or "", getattr(auth, "registry_token", "") or "")
        return c if (c.username or c.identity_token or c.registry_token) else None


def _decode_basic(value: str) -> tuple[str, str]:
    try:
        user, _, pw = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError("auth: the 'auth' field is not base64 of user:password") from e
    return user, pw


def docker_config_credentials(host: str, path: str | None = None) -> Credentials | None:
    """Credentials for ``host`` from a docker ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``)."""
    if path is None:
        base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
        path = os.path.join(base, "config.json")
    try:
        with open(path) as f:
            auths = json.load(f).get("auths", {})
    except (OSError, ValueError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host == DEFAULT_DOMAIN:
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    for key in list(auths):
        if key.rstrip("/").split("://")[-1].split("/")[0] == host:
            keys.append(key)
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        user, pw = entry.get("username", ""), entry.get("password", "")
        if entry.get("auth"):
            user, pw = _decode_basic(entry["auth"])
        tok = entry.get("identitytoken", "")
        if user or tok or entry.get("registrytoken"):
            return Credentials(user, pw, tok, entry.get("registrytoken", ""))
    return None


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^,\s]+)')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., "service": ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        if m.group(1):
            params[m.group(1).lower()] = m.group(2)
        else:
            params[m.group(3).lower()] = m.group(4)
    return scheme.lower(), params


@dataclass
class Resolved:
    """A reference resolved on a registry: the top-level digest (index or manifest) and the chosen manifest."""

    ref: Reference
    top_digest: str
    top_media_type: str
    top_body: bytes
    manifest_digest: str
    manifest_media_type: str
    manifest_body: bytes
    endpoint: Endpoint

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_body)


class Response:
    """A streamed HTTP response that closes its connection when done."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn, self.resp = conn, resp
        self.status = resp.status
        self.headers = resp.headers

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; a body cut short of its Content-Length raises :class:`Transient` (retried)."""
        remaining = self.resp.length
        try:
            data = self.resp.read(n) if n >= 0 else self.resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Transient(f"reading from registry: {e}") from e
        if not data and n != 0 and remaining:
            raise Transient(f"the registry closed the connection with {remaining} bytes of the body unsent")
        return data

    def close(self) -> None:
        self.conn.close()


class RegistryClient:
    """Talks to one or more registries for the store; thread-safe (tokens are cached under a lock)."""

    def __init__(
        self,
        hosts: HostsConfig | None = None,
        docker_config: str | None = None,
        platform_: dict[str, str] | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.hosts = hosts or HostsConfig(None)
        self.docker_config = docker_config
        self.platform = platform_ or host_platform()
        self.timeout = timeout
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    # ---- low level -------------------------------------------------------------------------------------

    def _connect(self, ep: Endpoint, netloc: str, scheme: str) -> http.client.HTTPConnection:
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self.timeout)
        ctx = ssl.create_default_context(cafile=ep.ca) if ep.ca else ssl.create_default_context()
        if ep.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(netloc, timeout=self.timeout, context=ctx)

    def _raw(self, ep: Endpoint, method: str, url: str, headers: dict[str, str],
             body: bytes | BinaryIO | None = None) -> Response:
        """One request with redirects followed (dropping Authorization when the host changes)."""
        for _ in range(6):
            u = urllib.parse.urlsplit(url)
            path = u.path + (f"?{u.query}" if u.query else "")
            conn = self._connect(ep, u.netloc, u.scheme)
            try:
                conn.request(method, path or "/", body=body, headers=headers)
                resp = conn.getresponse()
            except (socket.gaierror, ConnectionRefusedError) as e:
                conn.close()  # nothing to wait for: no such host / nothing listening; the next host is tried
                raise RegistryError(f"{method} {u.scheme}://{u.netloc}{u.path}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise Transient(f"{method} {u.scheme}://{u.netloc}{u.path}: {e}") from e
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                loc = urllib.parse.urljoin(url, resp.headers["Location"])
                resp.read()
                conn.close()
                if urllib.parse.urlsplit(loc).netloc != u.netloc:
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                url = loc
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return Response(conn, resp)
        raise RegistryError(f"too many redirects for {url}")

    def _credentials(self, host: str, creds: Credentials | None) -> Credentials | None:
        return creds or docker_config_credentials(host, self.docker_config)

    def request(self, ref: Reference, ep: Endpoint, method: str, path: str, *, creds: Credentials | None,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                scope_actions: str = "pull", ok: tuple[int, ...] = (200,)) -> Response:
        """A request to ``<endpoint>/v2/<path>``, answering an auth challenge once; raises on unexpected status."""
        url = path if path.startswith("http") else f"{ep.url}/v2/{path}"
        scope = f"repository:{ref.path}:{scope_actions}"
        hdrs = {"User-Agent": "k8sx", **ep.headers, **(headers or {})}
        creds = self._credentials(ref.domain, creds)
        key = (ep.url, scope)
        with self._lock:
            tok = self._tokens.get(key)
        if tok:
            hdrs["Authorization"] = tok
        resp = self._raw(ep, method, url, hdrs, body)
        if resp.status == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.read()
            resp.close()
            hdrs["Authorization"] = self._authorize(ep, challenge, scope, creds)
            with self._lock:
                self._tokens[key] = hdrs["Authorization"]
            resp = self._raw(ep, method, url, hdrs, body)
        if resp.status in ok:
            return resp
        detail = _error_detail(resp)
        resp.close()
        where = f"{method} {url}"
        if resp.status in (429,) or resp.status >= 500:
            raise Transient(f"{where}: HTTP {resp.status} {detail}")
        if resp.status == 401:
            raise RegistryError(f"{where}: unauthorized: {detail or 'authentication required'}")
        if resp.status == 403:
            raise RegistryError(f"{where}: denied: {detail}")
        if resp.status == 404:
            raise ImageNotFound(f"{where}: not found {detail}".rstrip())
        raise RegistryError(f"{where}: HTTP {resp.status} {detail}".rstrip())

    def _authorize(self, ep: Endpoint, challenge: str, scope: str, creds: Credentials | None) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not creds or not creds.username:
                raise RegistryError(f"{ep.url}: the registry wants basic auth and no credentials were given")
            return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        if scheme != "bearer":
            raise RegistryError(f"{ep.url}: unsupported auth challenge {challenge!r}")
        if creds and creds.registry_token:
            return "Bearer " + creds.registry_token
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"{ep.url}: bearer challenge without realm")
        q = {"scope": params.get("scope") or scope}
        if params.get("service"):
            q["service"] = params["service"]
        token_ep = Endpoint(realm, skip_verify=ep.skip_verify, ca=ep.ca)
        hdrs = {"User-Agent": "k8sx"}
        if creds and creds.identity_token:
            form = urllib.parse.urlencode({**q, "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                                           "client_id": "k8sx"}).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            resp = with_retries(lambda: self._raw(token_ep, "POST", realm, hdrs, form))
        else:
            if creds and creds.username:
                hdrs["Authorization"] = "Basic " + base64.b64encode(
                    f"{creds.username}:{creds.password}".encode()).decode()
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(q)
            resp = with_retries(lambda: self._raw(token_ep, "GET", url, hdrs))
        try:
            body = resp.read()
        finally:
            resp.close()
        if resp.status != 200:
            raise RegistryError(f"token server {realm}: HTTP {resp.status}: {body[:200]!r}")
        try:
            data = json.loads(body)
            return "Bearer " + (data.get("token") or data["access_token"])
        except (ValueError, KeyError) as e:
            raise RegistryError(f"token server {realm}: no token in the answer") from e

    def _endpoints(self, ref: Reference, capability: str) -> list[Endpoint]:
        eps = [e for e in self.hosts.endpoints(ref.domain) if capability in e.capabilities]
        if not eps:
            raise RegistryError(f"no registry host configured with capability {capability!r} for {ref.domain}")
        return eps

    def _each_endpoint(self, ref: Reference, capability: str, fn: Callable[[Endpoint], T]) -> T:
        """Try ``fn`` on each endpoint (mirrors first); the first success wins, else the last error."""
        err: Exception | None = None
        for ep in self._endpoints(ref, capability):
            try:
                return with_retries(lambda ep=ep: fn(ep))
            except (RegistryError, ImageNotFound) as e:
                if isinstance(e, DigestMismatch):
                    raise
                err = e
        assert err is not None
        raise err

    # ---- pull ------------------------------------------------------------------------------------------

    def fetch_manifest(self, ref: Reference, ep: Endpoint, obj: str, creds: Credentials | None,
                       ) -> tuple[str, str, bytes]:
        """GET a manifest or index; returns ``(digest, media type, body)`` with the digest verified."""
        resp = self.request(ref, ep, "GET", f"{ref.path}/manifests/{obj}", creds=creds, headers={"Accept": ACCEPT})
        try:
            body = resp.read(MANIFEST_MAX + 1)
        finally:
            resp.close()
        if len(body) > MANIFEST_MAX:
            raise RegistryError(f"manifest {ref.name}:{obj} is larger than {MANIFEST_MAX} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if obj.startswith("sha256:") and digest != obj:
            raise DigestMismatch(f"manifest {ref.name}@{obj}: the registry sent content hashing to {digest}")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(f"manifest {ref.name}:{obj}: Docker-Content-Digest {header} but content is {digest}")
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise RegistryError(f"manifest {ref.name}:{obj} is not JSON") from e
        mt = doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
        if doc.get("schemaVersion") == 1 or mt.startswith("application/vnd.docker.distribution.manifest.v1"):
            raise RegistryError(f"{ref.name}:{obj}: Docker schema 1 manifests are not supported")
        if mt not in INDEX_TYPES + MANIFEST_TYPES:
            mt = MT_OCI_INDEX if "manifests" in doc else MT_OCI_MANIFEST if "layers" in doc else mt
        if mt not in INDEX_TYPES + MANIFEST_TYPES:
            raise RegistryError(f"{ref.name}:{obj}: unsupported manifest media type {mt!r}")
        return digest, mt, body

    def select_platform(self, ref: Reference, index: dict[str, Any]) -> dict[str, Any]:
        """Pick the index entry for our platform (os, architecture, then variant when both give one)."""
        want = self.platform
        best: dict[str, Any] | None = None
        for m in index.get("manifests", []):
            p = m.get("platform") or {}
            if p.get("os") != want["os"] or p.get("architecture") != want["architecture"]:
                continue
            if m.get("mediaType") and m["mediaType"] not in MANIFEST_TYPES:
                continue
            if "variant" in want and p.get("variant") and p["variant"] != want["variant"]:
                continue
            best = best or m
        if best is None:
            arch = f"{want['os']}/{want['architecture']}"
            raise ImageNotFound(f"{ref}: no manifest for platform {arch} in the image index")
        return best

    def resolve(self, ref: Reference, creds: Credentials | None = None) -> Resolved:
        """Resolve ``ref`` to this platform's image manifest, verifying every digest on the way."""

        def attempt(ep: Endpoint) -> Resolved:
            top_d, top_mt, top_body = self.fetch_manifest(ref, ep, ref.object, creds)
            d, mt, body = top_d, top_mt, top_body
            if mt in INDEX_TYPES:
                entry = self.select_platform(ref, json.loads(body))
                d, mt, body = self.fetch_manifest(ref, ep, entry["digest"], creds)
                if mt in INDEX_TYPES:
                    raise RegistryError(f"{ref}: nested image indexes are not supported")
            return Resolved(ref, top_d, top_mt, top_body, d, mt, body, ep)

        return self._each_endpoint(ref, "resolve", attempt)

    def fetch_blob(self, ref: Reference, ep: Endpoint, digest: str, out: BinaryIO,
                   creds: Credentials | None = None, chunk: int = 1 << 20) -> None:
        """Stream blob ``digest`` into ``out`` (the content store hashes and verifies it)."""
        resp = self.request(ref, ep, "GET", f"{ref.path}/blobs/{digest}", creds=creds)
        try:
            while True:
                data = resp.read(chunk)
                if not data:
                    break
                out.write(data)
        finally:
            resp.close()

    # ---- push (tests, demo) ----------------------------------------------------------------------------

    def push_blob(self, ref: Reference, data: bytes, creds: Credentials | None = None) -> str:
        """Upload ``data`` as a blob of ``ref``'s repository (monolithic upload); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        ep = self._endpoints(ref, "pull")[-1]
        acts = "pull,push"
        head = self.request(ref, ep, "HEAD", f"{ref.path}/blobs/{digest}", creds=creds, scope_actions=acts,
                            ok=(200, 404))
        head.close()
        if head.status == 200:
            return digest
        resp = self.request(ref, ep, "POST", f"{ref.path}/blobs/uploads/", creds=creds, scope_actions=acts,
                            ok=(202,), headers={"Content-Length": "0"})
        loc = urllib.parse.urljoin(ep.url + "/", resp.headers.get("Location", ""))
        resp.read()
        resp.close()
        url = loc + ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": digest})
        put = self.request(ref, ep, "PUT", url, creds=creds, body=data, scope_actions=acts, ok=(201,),
                           headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        put.close()
        return digest

    def push_manifest(self, ref: Reference, body: bytes, media_type: str, creds: Credentials | None = None) -> str:
        """PUT a manifest or index under ``ref``'s tag (or digest); returns its digest."""
        ep = self._endpoints(ref, "pull")[-1]
        resp = self.request(ref, ep, "PUT", f"{ref.path}/manifests/{ref.object}", creds=creds, body=body,
                            scope_actions="pull,push", ok=(201,),
                            headers={"Content-Type": media_type, "Content-Length": str(len(body))})
        resp.close()
        return "sha256:" + hashlib.sha256(body).hexdigest()


def _error_detail(resp: Response) -> str:
    try:
        body = resp.read(4096)
        errs = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errs)
    except (ValueError, RegistryError, AttributeError):
        return ""
