"""A scaffolded operator, installed and run: its own tests pass, and against the API emulator it turns an
AppService into a Deployment and a NodePort Service, scales, cleans up, and asks for nothing its RBAC
does not grant.

The project is generated into a k8sxtk-prefixed temporary directory and installed (not editable) into
a temporary venv whose packages come from k8sx's venv (kopf, kmock, pydantic, kubernetes): no download.
The emulator is k8sx.operator.emulator (no garbage collector: the children disappear because the
operator's delete handler deletes them, which is what this test checks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from kubeapi import ApiEmulator
from support import bin_path, unique

PKG, REPO_NAME = "appservice_operator", "appservice-operator"
GROUP, PLURAL = "app.example.com", "appservices"
CR_PATH = f"/apis/{GROUP}/v1/namespaces/default/{PLURAL}"


@dataclass
class Installed:
    project: str
    python: str
    bin: str


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp(unique("k", 20))
    project = str(base / unique("k", 20))
    k8sx = bin_path("k8sx")
    for args in (["init", "--domain", "example.com", "--repo", REPO_NAME, "--dir", project],
                 ["create", "api", "--dir", project, "--group", "app", "--version", "v1", "--kind", "AppService",
                  "--example", "appservice"],
                 ["create", "api", "--dir", project, "--group", "batch", "--version", "v1alpha1", "--kind",
                  "Backup"]):  # a second kind, without an example: its generated tests must pass too
        r = subprocess.run([k8sx, "operator", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    venv = str(base / unique("kvenv", 20))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = os.path.join(venv, "bin", "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "k8sx-test-deps.pth"), "w", encoding="utf-8") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")  # kopf, kmock, ... from k8sx's venv
    r = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        project], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield Installed(project, python, os.path.join(venv, "bin"))
    shutil.rmtree(base, ignore_errors=True)


def clean_env() -> dict[str, str]:
    """No KUBECONFIG: the project's tests then use their own emulator, never a real cluster."""
    return {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTHONPATH")}


def test_the_generated_tests_pass(installed):
    # k8sx made unimportable in the test process: the project's code and tests must not need it.
    run = ("import sys; sys.modules['k8sx'] = None; import pytest; "
           "sys.exit(pytest.main(['-v', '-p', 'no:cacheprovider', 'tests']))")
    r = subprocess.run([installed.python, "-c", run],
                       cwd=installed.project, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    passed = {line.split(" ")[0] for line in r.stdout.splitlines() if " PASSED" in line}
    # handler unit tests, the runtime kopf lacks (leader election, metrics) and the end-to-end test all ran
    for test in ("tests/test_appservice_controller.py::test_reconcile_creates_owned_children_and_reports",
                 "tests/test_appservice_controller.py::test_resync_repairs_a_deleted_child",
                 "tests/test_runtime.py::test_one_leader_at_a_time",
                 "tests/test_runtime.py::test_metrics_endpoint_serves_the_text_format",
                 "tests/test_appservice_e2e.py::test_appservice_lifecycle",
                 "tests/test_backup_controller.py::test_reconcile_reports_ready",
                 "tests/test_backup_e2e.py::test_backup_lifecycle"):
        assert test in passed, r.stdout[-3000:]
    assert "SKIPPED" not in r.stdout and "FAILED" not in r.stdout


def wait_for(fn, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not met in {timeout:g}s"
        time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def allowed(rules: list[tuple[str | None, dict]], group: str, resource: str, verb: str, namespace: str | None) -> bool:
    for ns, rule in rules:
        if ns is not None and ns != namespace:
            continue
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            return True
    return False


def verb_of(req) -> str:
    method = str(getattr(req.method, "value", req.method)).upper()
    if method == "GET":
        return "watch" if req.params.get("watch") == "true" else ("get" if req.name else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
        "delete" if req.name else "deletecollection")


def test_the_operator_runs_against_the_emulator(installed, tmp_path):
    with ApiEmulator() as api:
        kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
        with open(os.path.join(installed.project, "config/crd/bases/app.example.com_appservices.yaml")) as f:
            api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(f))
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": f"{REPO_NAME}-system"}})
        metrics = free_port()
        log = tmp_path / "operator.log"
        cmd = [os.path.join(installed.bin, REPO_NAME), "--all-namespaces", "--leader-elect", "--resync-period", "1",
               "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
               "--metrics-bind-address", f"127.0.0.1:{metrics}"]
        env = {**clean_env(), "KUBECONFIG": kubeconfig, "POD_NAMESPACE": f"{REPO_NAME}-system"}
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path))
        try:
            sample = {"apiVersion": f"{GROUP}/v1", "kind": "AppService", "metadata": {"name": "web"},
                      "spec": {"size": 2, "image": "nginx:1.27", "ports": [{"name": "http", "port": 80}]}}
            uid = api.create(CR_PATH, sample)["metadata"]["uid"]
            dep = api.wait_for("/apis/apps/v1/namespaces/default/deployments/web")
            assert dep["spec"]["replicas"] == 2
            assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
            assert [(o["kind"], o["uid"], o["controller"]) for o in dep["metadata"]["ownerReferences"]] == [
                ("AppService", uid, True)]
            svc = api.wait_for("/api/v1/namespaces/default/services/web")
            assert svc["spec"]["type"] == "NodePort"
            assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]
            assert svc["metadata"]["ownerReferences"][0]["uid"] == uid
            cr = api.wait_for(f"{CR_PATH}/web", lambda o: o and (o.get("status") or {}).get("conditions"))
            assert cr["status"]["replicas"] == 2 and cr["metadata"]["finalizers"] == [f"{GROUP}/finalizer"]

            api.patch(f"{CR_PATH}/web", {"spec": {"size": 5}})
            api.wait_for("/apis/apps/v1/namespaces/default/deployments/web",
                         lambda o: o and o["spec"]["replicas"] == 5)
            api.wait_for(f"{CR_PATH}/web", lambda o: o["status"]["replicas"] == 5)

            lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{REPO_NAME}-system/leases/{REPO_NAME}-leader")
            assert lease["spec"]["holderIdentity"]
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
                text = r.read().decode()
            assert 'operator_reconcile_total{controller="appservice",handler="reconcile",result="success"} ' in text

            api.delete(f"{CR_PATH}/web")
            api.wait_for("/apis/apps/v1/namespaces/default/deployments/web", lambda o: o is None)
            api.wait_for("/api/v1/namespaces/default/services/web", lambda o: o is None)
            api.wait_for(f"{CR_PATH}/web", lambda o: o is None)
            events = api.get("/api/v1/namespaces/default/events")["items"]
            assert {"Reconciled"} <= {e["reason"] for e in events if e["involvedObject"]["uid"] == uid}
        finally:
            proc.terminate()
            try:
                code = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        output = log.read_text(errors="replace")
        assert code == 0, output[-5000:]
        # A clean stop gives the Lease up for the next replica.
        lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{REPO_NAME}-system/leases/{REPO_NAME}-leader")
        assert lease["spec"]["holderIdentity"] == "", lease

        # Every request the operator made (kopf's and the handlers') is granted by the generated RBAC.
        rules: list[tuple[str | None, dict]] = []
        with open(os.path.join(installed.project, "config/rbac/role.yaml")) as f:
            for doc in yaml.safe_load_all(f):
                if doc["kind"] in ("ClusterRole", "Role"):
                    rules += [(doc["metadata"].get("namespace"), r) for r in doc["rules"]]
        asked = set()
        for req in api.requests:
            agent = req.headers.get("User-Agent", "")
            if agent.startswith("Python-urllib") or req.resource is None or not req.resource.plural:
                continue  # the test's own requests, and discovery
            resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
            asked.add((req.resource.group, resource, verb_of(req), req.namespace))
        assert len(asked) > 10, f"too few requests from the operator were recorded: {asked}"
        denied = sorted(a for a in asked if not allowed(rules, *a))
        assert not denied, f"requests the RBAC does not grant: {denied}"
        assert ("apps", "deployments", "create", "default") in asked
        assert ("coordination.k8s.io", "leases", "update", f"{REPO_NAME}-system") in asked
