"""Registry client pieces that need no network: the hosts.toml layout, auth challenges, credentials,
platform selection. The network paths are covered against a real registry in test_images_store.py."""

from __future__ import annotations

import base64
import json
import os

import pytest

from k8sx.cri.images.errors import ImageNotFound, RegistryError
from k8sx.cri.images.reference import parse
from k8sx.cri.images.registry import (
    Credentials,
    HostsConfig,
    RegistryClient,
    docker_config_credentials,
    parse_challenge,
)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_hosts_config_layout(tmpdir_k8sxti):
    d = tmpdir_k8sxti
    write(f"{d}/reg.example:5000/hosts.toml", 'server = "http://10.0.0.5:5000"\n[host."https://m1.example"]\n'
          '  capabilities = ["pull"]\n  skip_verify = true\n  [host."https://m1.example".header]\n    X-A = ["b"]\n')
    write(f"{d}/docker.io/hosts.toml", '[host."http://127.0.0.1:5999"]\n  capabilities = ["pull", "resolve"]\n')
    write(f"{d}/_default/hosts.toml", 'server = "https://fallback.example"\n')
    hc = HostsConfig(d)
    m1, server = hc.endpoints("reg.example:5000")
    assert (m1.url, m1.capabilities, m1.skip_verify) == ("https://m1.example", ("pull",), True)
    assert m1.headers == {"X-A": "b"}
    assert server.url == "http://10.0.0.5:5000" and server.plain_http
    mirror, default = hc.endpoints("docker.io")
    assert mirror.url == "http://127.0.0.1:5999" and default.url == "https://registry-1.docker.io"
    assert [e.url for e in hc.endpoints("other.example")] == ["https://fallback.example"]
    none = HostsConfig(None)
    assert [e.url for e in none.endpoints("127.0.0.1:5000")] == ["http://127.0.0.1:5000"]
    assert [e.url for e in none.endpoints("localhost:5000")] == ["http://localhost:5000"]
    assert [e.url for e in none.endpoints("quay.io")] == ["https://quay.io"]
    write(f"{d}/bad.example/hosts.toml", "server = [\n")
    with pytest.raises(RegistryError, match="hosts.toml"):
        hc.endpoints("bad.example")


def test_resolve_capability_filters_mirrors(tmpdir_k8sxti):
    write(f"{tmpdir_k8sxti}/x.example/hosts.toml", 'server = "http://127.0.0.1:1"\ncapabilities = ["pull"]\n')
    with pytest.raises(RegistryError, match="capability 'resolve'"):
        RegistryClient(HostsConfig(tmpdir_k8sxti)).resolve(parse("x.example/a:1"))


def test_parse_challenge():
    scheme, p = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"')
    assert scheme == "bearer" and p == {"realm": "https://auth.example/token", "service": "reg",
                                        "scope": "repository:a:pull"}
    assert parse_challenge('Basic realm="k8sxti"') == ("basic", {"realm": "k8sxti"})


def test_credentials_sources(tmpdir_k8sxti):
    from k8sx.cri.images.store import Auth

    assert Credentials.from_auth(None) is None and Credentials.from_auth(Auth()) is None
    c = Credentials.from_auth(Auth(auth=base64.b64encode(b"u:p:with:colons").decode()))
    assert (c.username, c.password) == ("u", "p:with:colons")
    with pytest.raises(RegistryError, match="base64"):
        Credentials.from_auth(Auth(auth="%%%"))
    cfg = os.path.join(tmpdir_k8sxti, "config.json")
    with open(cfg, "w") as f:
        json.dump({"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                             "http://reg.example:5000": {"username": "r", "password": "s"},
                             "tok.example": {"identitytoken": "refresh"}}}, f)
    assert docker_config_credentials("docker.io", cfg) == Credentials("hub", "pw")
    assert docker_config_credentials("reg.example:5000", cfg) == Credentials("r", "s")
    assert docker_config_credentials("tok.example", cfg).identity_token == "refresh"
    assert docker_config_credentials("absent.example", cfg) is None
    assert docker_config_credentials("docker.io", os.path.join(tmpdir_k8sxti, "missing.json")) is None


def test_select_platform():
    index = {"manifests": [
        {"digest": "sha256:" + "1" * 64, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "sha256:" + "2" * 64, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "sha256:" + "3" * 64, "platform": {"os": "windows", "architecture": "amd64"}},
        {"digest": "sha256:" + "4" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    ref = parse("x.example/a:1")
    pick = lambda plat: RegistryClient(platform_=plat).select_platform(ref, index)["digest"][7]  # noqa: E731
    assert pick({"os": "linux", "architecture": "amd64"}) == "4"
    assert pick({"os": "linux", "architecture": "arm", "variant": "v7"}) == "2"
    with pytest.raises(ImageNotFound, match="linux/s390x"):
        pick({"os": "linux", "architecture": "s390x"})
