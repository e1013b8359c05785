"""kubectl's connection flags, on the first command that talks to an API server (``crd ls``),
against the shared API emulator: accepted anywhere on the line, honoured, and failing clearly."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from kubeapi import ApiEmulator, write_kubeconfig
from support import BIN, bin_path

from k8sx.errors import K8sxError, UsageError
from k8sx.kube import KubeConnection, load_kubeconfig, parse_timeout

CRONTAB = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "crontabs.stable.example.com"},
    "spec": {"group": "stable.example.com", "scope": "Namespaced",
             "names": {"kind": "CronTab", "plural": "crontabs", "singular": "crontab", "shortNames": ["ct"]},
             "versions": [{"name": "v1", "served": True, "storage": True},
                          {"name": "v1beta1", "served": True, "storage": False}]},
    "status": {"conditions": [{"type": "Established", "status": "True"}]},
}


@pytest.fixture(scope="module")
def api():
    with ApiEmulator() as emulator:
        emulator.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRONTAB)
        yield emulator


@pytest.fixture
def kubeconfig(api, tmp_path):
    return api.kubeconfig(str(tmp_path / "config"), context="emu", extra_contexts=("down",))


def k8sx(*args: str, env: dict[str, str] | None = None, prog: str = "k8sx") -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | (env or {})
    return subprocess.run([bin_path(prog), *args], capture_output=True, text=True, timeout=60, env=full)


def test_crd_ls_lists_versions_and_storage(kubeconfig):
    r = k8sx("crd", "ls", "--kubeconfig", kubeconfig)
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "SCOPE", "VERSIONS", "STORAGE", "ESTABLISHED"]
    assert row.split() == ["crontabs.stable.example.com", "CronTab", "Namespaced", "v1,v1beta1", "v1", "True"]
    assert k8sx("crd", "ls", "-q", "--kubeconfig", kubeconfig).stdout == "crontabs.stable.example.com\n"
    items = json.loads(k8sx("crd", "ls", "-o", "json", "--kubeconfig", kubeconfig).stdout)
    assert [i["spec"]["names"]["kind"] for i in items] == ["CronTab"]


@pytest.mark.parametrize("where", ["after", "before-group", "between", "kubectl"])
def test_connection_flags_anywhere_on_the_line(kubeconfig, where):
    flags = ["--kubeconfig", kubeconfig, "--context=emu", "-n", "team-a", "--request-timeout", "5s"]
    args = {
        "after": ["crd", "ls", "-q", *flags],
        "before-group": [*flags, "crd", "ls", "-q"],
        "between": ["crd", *flags, "ls", "-q"],
        "kubectl": ["x", *flags, "crd", "ls", "-q"],
    }[where]
    if where == "kubectl":
        r = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
    else:
        r = k8sx(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "crontabs.stable.example.com\n"


def test_kubeconfig_env_and_context_choice(kubeconfig):
    assert k8sx("crd", "ls", "-q", env={"KUBECONFIG": kubeconfig}).returncode == 0
    r = k8sx("crd", "ls", "--context", "down", env={"KUBECONFIG": kubeconfig})
    assert r.returncode == 1
    assert r.stderr.startswith("Error: cannot reach the API server at http://127.0.0.1:9")
    r = k8sx("crd", "ls", "--context", "nope", env={"KUBECONFIG": kubeconfig})
    assert r.returncode == 1
    assert "context 'nope' not found" in r.stderr and "known contexts: down, emu" in r.stderr
    assert "Traceback" not in r.stderr


def test_cluster_and_user_override_the_context(kubeconfig):
    r = k8sx("crd", "ls", "--kubeconfig", kubeconfig, "--cluster", "nowhere")
    assert r.returncode == 1 and "http://127.0.0.1:9" in r.stderr
    r = k8sx("crd", "ls", "--kubeconfig", kubeconfig, "--user", "ghost")
    assert r.returncode == 1 and "user 'ghost' not found" in r.stderr


def test_as_impersonates_and_the_token_is_sent(api, kubeconfig):
    before = len(api.requests)
    assert k8sx("crd", "ls", "-q", "--kubeconfig", kubeconfig, "--as", "alice").returncode == 0
    sent = api.requests[before:]
    assert sent, "the emulator saw no request"
    headers = sent[-1].headers
    assert headers.get("Impersonate-User") == "alice"
    assert headers.get("Authorization") == "Bearer emulator-token"


def test_bad_flag_values_are_usage_errors(kubeconfig):
    r = k8sx("crd", "ls", "--kubeconfig", kubeconfig, "--request-timeout", "soon")
    assert r.returncode == 2 and "invalid --request-timeout 'soon'" in r.stderr
    r = k8sx("crd", "ls", "--kubeconfig", "/nonexistent/k8sxt-config")
    assert r.returncode == 1 and "kubeconfig /nonexistent/k8sxt-config does not exist" in r.stderr
    # a command that talks to no API server does not take the flags
    r = k8sx("completion", "bash", "--context", "emu")
    assert r.returncode == 2 and "No such option" in r.stderr


def test_kubeconfig_merge_first_file_wins_and_relative_paths(tmp_path):
    first = write_kubeconfig(str(tmp_path / "a" / "config"), "https://first:6443", context="shared")
    second = write_kubeconfig(str(tmp_path / "b" / "config"), "https://second:6443", context="shared",
                              extra_contexts=("only-b",))
    cfg = load_kubeconfig([first, second])
    assert cfg["current-context"] == "shared"
    assert [c["name"] for c in cfg["contexts"]] == ["shared", "only-b"]
    assert {c["name"]: c["cluster"]["server"] for c in cfg["clusters"]}["emulator"] == "https://first:6443"
    # a relative certificate path is relative to the file that names it
    import yaml

    with open(second, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["clusters"][0]["cluster"]["certificate-authority"] = "ca.crt"
    with open(second, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)
    cfg = load_kubeconfig([second])
    assert cfg["clusters"][0]["cluster"]["certificate-authority"] == str(tmp_path / "b" / "ca.crt")


def test_namespace_order(tmp_path):
    path = write_kubeconfig(str(tmp_path / "config"), "http://127.0.0.1:9", namespace="ctx-ns")
    assert KubeConnection(kubeconfig=path).default_namespace() == "ctx-ns"
    assert KubeConnection(kubeconfig=path, namespace="flag-ns").default_namespace() == "flag-ns"
    bare = write_kubeconfig(str(tmp_path / "bare"), "http://127.0.0.1:9")
    assert KubeConnection(kubeconfig=bare).default_namespace() == "default"


@pytest.mark.parametrize("value,seconds", [("0", None), ("30", 30.0), ("1m30s", 90.0), ("250ms", 0.25), ("1h", 3600.0)])
def test_request_timeout_values(value, seconds):
    assert parse_timeout(value) == seconds


def test_request_timeout_rejects_garbage():
    with pytest.raises(UsageError):
        parse_timeout("1x")
    with pytest.raises(K8sxError):
        KubeConnection(kubeconfig="/nonexistent/k8sxt").config()
