"""``crd apply|diff`` against the shared API emulator (kmock; no kube-apiserver can run offline here).

What is real: the HTTP requests k8sx makes (paths, PUT vs POST, ``dryRun=All``, ``fieldManager``),
kubectl's connection flags, and the emulator's storage. What is not emulated: the server's own
validation and defaulting -- a dry run against the emulator only echoes the body without storing
it -- so the rules the server would enforce are proven by test_validate.py instead, and apply's
refusal of an invalid CRD happens before any request (asserted below by the request log).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from crdtools import DATA, k8sx
from kubeapi import ApiEmulator

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture
def api():
    with ApiEmulator() as emulator:
        yield emulator


@pytest.fixture
def kubeconfig(api, tmp_path):
    return api.kubeconfig(str(tmp_path / "k8sxtd-kubeconfig"), context="emu", extra_contexts=("down",))


def _crontab(tmp_path, *extra):
    r = k8sx("crd", "generate", "--from-sample", os.path.join(DATA, "crontab.yaml"), *extra)
    assert r.returncode == 0, r.stderr
    path = tmp_path / f"k8sxtd-crontab{len(extra)}.yaml"
    path.write_text(r.stdout)
    return str(path)


def _writes(api):
    return [(str(getattr(r.method, "value", r.method)), r.url.path, dict(r.params)) for r in api.requests
            if str(getattr(r.method, "value", r.method)) in ("POST", "PUT", "PATCH", "DELETE")]


def _stored(api, name="crontabs.stable.example.com"):
    try:
        return api.request("GET", f"{CRDS}/{name}")
    except Exception:
        return None


def test_server_dry_run_stores_nothing_then_apply_creates(api, kubeconfig, tmp_path):
    f = _crontab(tmp_path)
    r = k8sx("crd", "apply", f, "--dry-run=server", "--kubeconfig", kubeconfig)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created " \
                       "(server dry run)\n"
    assert _writes(api) == [("POST", CRDS, {"fieldManager": "k8sx", "dryRun": "All"})]
    assert _stored(api) is None
    r = k8sx("crd", "apply", f, "--kubeconfig", kubeconfig)
    assert r.returncode == 0 and r.stdout.endswith(" created\n"), r.stderr
    assert _stored(api)["spec"] == yaml.safe_load(Path(f).read_text())["spec"]
    r = k8sx("crd", "apply", f, "-q", "--kubeconfig", kubeconfig)
    assert r.stdout == "crontabs.stable.example.com\n"
    assert k8sx("crd", "apply", f, "--kubeconfig", kubeconfig).stdout.endswith(" unchanged\n")
    assert len(_writes(api)) == 2  # unchanged sends nothing
    ls = k8sx("crd", "ls", "-q", "--kubeconfig", kubeconfig)
    assert ls.stdout == "crontabs.stable.example.com\n"


def test_changed_crd_is_replaced_and_diffed(api, kubeconfig, tmp_path):
    old = _crontab(tmp_path)
    new = _crontab(tmp_path, "--short-name", "ct", "--column", "Image:string:.spec.image")
    assert k8sx("crd", "apply", old, "--kubeconfig", kubeconfig).returncode == 0
    d = k8sx("crd", "diff", old, "--kubeconfig", kubeconfig)
    assert (d.returncode, d.stdout) == (0, "")
    d = k8sx("crd", "diff", new, "--kubeconfig", kubeconfig)
    assert d.returncode == 1
    assert d.stdout.startswith("--- live/crontabs.stable.example.com\n+++ merged/crontabs.stable.example.com\n")
    assert "+    shortNames:\n+      - ct\n" in d.stdout and "+          name: Image\n" in d.stdout
    assert _writes(api)[-1] == ("PUT", f"{CRDS}/crontabs.stable.example.com",
                                {"fieldManager": "k8sx", "dryRun": "All"})
    assert "shortNames" not in _stored(api)["spec"]["names"]  # diff's dry run stored nothing
    assert k8sx("crd", "diff", new, "--client-side", "--kubeconfig", kubeconfig).returncode == 1
    r = k8sx("crd", "apply", new, "--dry-run=client", "--kubeconfig", kubeconfig)
    assert r.stdout.endswith(" configured (client dry run)\n")
    r = k8sx("crd", "apply", new, "--kubeconfig", kubeconfig)
    assert r.stdout.endswith(" configured\n"), r.stderr
    assert _stored(api)["spec"]["names"]["shortNames"] == ["ct"]
    assert k8sx("crd", "diff", new, "--kubeconfig", kubeconfig).returncode == 0


def test_invalid_crd_never_reaches_the_server(api, kubeconfig, tmp_path):
    bad = tmp_path / "k8sxtd-bad.yaml"
    bad.write_text(Path(_crontab(tmp_path)).read_text().replace("name: crontabs.stable.example.com",
                                                           "name: crontab.stable.example.com"))
    for verb in ("apply", "diff"):
        r = k8sx("crd", verb, str(bad), "--kubeconfig", kubeconfig)
        assert r.returncode == 1
        assert f"{bad}:4: [names.crd-name] metadata.name" in r.stderr
        assert "nothing sent" in r.stderr
    assert api.requests == []
    r = k8sx("crd", "apply", os.path.join(DATA, "crontab-crd-v1beta1.yaml"), "--kubeconfig", kubeconfig)
    assert r.returncode == 1 and "[api-version]" in r.stderr and "crd convert" in r.stderr


def test_connection_errors_and_usage(kubeconfig, tmp_path):
    f = _crontab(tmp_path)
    r = k8sx("crd", "apply", f, "--kubeconfig", kubeconfig, "--context", "down")
    assert r.returncode == 1 and r.stderr.startswith("Error: cannot reach the API server at http://127.0.0.1:9")
    r = k8sx("crd", "apply", f, "--dry-run", "maybe", "--kubeconfig", kubeconfig)
    assert r.returncode == 2 and "'maybe' is not one of" in r.stderr
    r = k8sx("crd", "apply", "--kubeconfig", kubeconfig, "--context=emu", "crd-k8sxtd-missing.yaml")
    assert r.returncode == 2


def test_multi_document_file_applies_each_crd(api, kubeconfig, tmp_path):
    both = tmp_path / "k8sxtd-both.yaml"
    crontab = Path(_crontab(tmp_path)).read_text()
    app = k8sx("crd", "generate", "--from-sample", os.path.join(DATA, "appservice.yaml")).stdout
    both.write_text(crontab + "---\n" + app)
    r = k8sx("crd", "apply", str(both), "-o", "json", "--kubeconfig", kubeconfig)
    assert r.returncode == 0, r.stderr
    import json

    assert [o["metadata"]["name"] for o in json.loads(r.stdout)] == ["crontabs.stable.example.com",
                                                                     "appservices.app.example.com"]
    assert _stored(api, "appservices.app.example.com")["spec"]["names"]["kind"] == "AppService"


def test_a_stored_version_cannot_be_dropped(api, kubeconfig, tmp_path):
    """The API server keeps a version while status.storedVersions names it; apply says so up front."""
    two = yaml.safe_load(k8sx("crd", "generate", "--from-sample", os.path.join(DATA, "crontab.yaml"),
                              "--version", "v1", "--version", "v1beta1").stdout)
    api.create(CRDS, {**two, "status": {"storedVersions": ["v1", "v1beta1"]}})
    one = _crontab(tmp_path)
    r = k8sx("crd", "apply", one, "--kubeconfig", kubeconfig)
    assert r.returncode == 1
    assert "[versions.stored] version(s) v1beta1 are in status.storedVersions" in r.stderr
    assert "Hint: migrate the stored objects" in r.stderr
    d = k8sx("crd", "diff", one, "--kubeconfig", kubeconfig)
    assert d.returncode == 1 and "[versions.stored]" in d.stderr and d.stdout == ""
    assert _writes(api) == [("POST", CRDS, {})]  # the setup's create, nothing from apply
