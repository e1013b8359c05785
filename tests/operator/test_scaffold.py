"""``k8sx operator init | create api | manifests`` as a user runs them: what they write, what they refuse,
and that a second run never overwrites what the user owns."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml
from support import REPO, bin_path, unique

K8SX = bin_path("k8sx")


def k8sx(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([K8SX, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def project(tmp_path):
    """An initialised project with the AppService example, in a k8sxtk-prefixed directory."""
    d = str(tmp_path / unique("k", 20))
    r = k8sx("operator", "init", "--domain", "example.com", "--repo", "appservice-operator", "--dir", d)
    assert r.returncode == 0, r.stderr
    r = k8sx("operator", "create", "api", "--dir", d, "--group", "app", "--version", "v1", "--kind", "AppService",
             "--example", "appservice")
    assert r.returncode == 0, r.stderr
    yield d
    shutil.rmtree(d, ignore_errors=True)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_layout_and_generated_files(project):
    pkg = os.path.join(project, "appservice_operator")
    for rel in ("PROJECT", "pyproject.toml", "Makefile", "Dockerfile", "config/manager/manager.yaml",
                "config/rbac/role.yaml", "config/crd/bases/app.example.com_appservices.yaml",
                "config/samples/app.example.com_v1_appservice.yaml", "tests/kubeapi.py", "tests/conftest.py",
                "tests/test_appservice_controller.py", "tests/test_appservice_e2e.py"):
        assert os.path.exists(os.path.join(project, rel)), rel
    assert "from . import appservice  # noqa: F401\n# +k8sx:scaffold:imports" in read(
        os.path.join(pkg, "controllers", "__init__.py"))
    assert 'FINALIZER = "app.example.com/finalizer"' in read(os.path.join(pkg, "project.py"))
    makefile = read(os.path.join(project, "Makefile"))
    for target in ("manifests", "install", "uninstall", "run", "deploy", "undeploy", "docker-build", "test"):
        assert f"\n{target}:" in makefile, target
    dockerfile = read(os.path.join(project, "Dockerfile"))
    assert "USER 65532:65532" in dockerfile
    deploy = [d for d in yaml.safe_load_all(read(os.path.join(project, "config/manager/manager.yaml")))
              if d["kind"] == "Deployment"][0]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # The emulator copy is k8sx's own module, so the project's tests need no k8sx.
    assert read(os.path.join(REPO, "k8sx", "operator", "emulator.py")) in read(os.path.join(project, "tests",
                                                                                            "kubeapi.py"))


def test_the_crd_comes_from_the_model_and_passes_the_validator(project):
    crd_file = os.path.join(project, "config/crd/bases/app.example.com_appservices.yaml")
    r = k8sx("crd", "validate", crd_file)
    assert r.returncode == 0, r.stdout + r.stderr
    crd = yaml.safe_load(read(crd_file))
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["image", "ports"]
    assert spec["properties"]["size"] == {"default": 1, "description": "Replicas of the Deployment.",
                                          "maximum": 100, "minimum": 0, "type": "integer"}
    assert version["subresources"] == {"status": {}, "scale": {"specReplicasPath": ".spec.size",
                                                              "statusReplicasPath": ".status.replicas"}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Size", "Image", "Ready"]
    # A field added to the model reaches the CRD with `make manifests` (k8sx operator manifests).
    types = os.path.join(project, "appservice_operator/api/v1/appservice_types.py")
    text = read(types).replace('    image: Annotated[str', '    paused: bool = False\n    image: Annotated[str')
    with open(types, "w", encoding="utf-8") as f:
        f.write(text)
    r = k8sx("operator", "manifests", "--dir", project)
    assert r.returncode == 0, r.stderr
    crd = yaml.safe_load(read(crd_file))
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["paused"] == {"default": False, "type": "boolean"}


def rules(project: str) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for doc in yaml.safe_load_all(read(os.path.join(project, "config/rbac/role.yaml"))):
        for rule in doc.get("rules") or []:
            for g in rule["apiGroups"]:
                for res in rule["resources"]:
                    out.setdefault((g, res), set()).update(rule["verbs"])
    return out


def test_rbac_follows_the_markers(project):
    have = rules(project)
    assert {"create", "patch", "delete", "get"} <= have[("apps", "deployments")]
    assert {"create", "patch", "delete"} <= have[("", "services")]
    assert have[("app.example.com", "appservices/status")] >= {"patch"}
    assert have[("", "events")] == {"create"}
    assert ("", "configmaps") not in have
    controller = os.path.join(project, "appservice_operator/controllers/appservice.py")
    with open(controller, "a", encoding="utf-8") as f:
        f.write("# +k8sx:rbac:groups=\"\",resources=configmaps,verbs=get;list\n")
    assert k8sx("operator", "manifests", "--dir", project).returncode == 0
    assert rules(project)[("", "configmaps")] == {"get", "list"}


def test_a_second_generator_run_keeps_user_code(project):
    pkg = os.path.join(project, "appservice_operator")
    edits = {
        os.path.join(pkg, "controllers", "appservice.py"): "\n# user code: my own handler\n",
        os.path.join(project, "Makefile"): "\nmine:\n\techo mine\n",
        os.path.join(pkg, "manager.py"): "\n# user code: my manager change\n",
        os.path.join(pkg, "controllers", "__init__.py"): "\n# user code below the marker\n",
    }
    for path, extra in edits.items():
        with open(path, "a", encoding="utf-8") as f:
            f.write(extra)
    before = {p: read(p) for p in edits}
    r = k8sx("operator", "create", "api", "--dir", project, "--group", "batch", "--version", "v1beta1",
             "--kind", "Backup")
    assert r.returncode == 0, r.stderr
    assert "kept" not in r.stdout  # all of Backup's files are new
    for path in edits:
        if path.endswith("__init__.py"):
            assert read(path) == before[path].replace(
                "# +k8sx:scaffold:imports", "from . import backup  # noqa: F401\n# +k8sx:scaffold:imports")
        else:
            assert read(path) == before[path], path
    assert os.path.exists(os.path.join(project, "config/crd/bases/batch.example.com_backups.yaml"))
    # A user-owned file of a new kind that exists already is kept, and said so.
    os.remove(os.path.join(project, "config/crd/bases/batch.example.com_backups.yaml"))
    project_file = yaml.safe_load(read(os.path.join(project, "PROJECT")))
    assert [r["kind"] for r in project_file["resources"]] == ["AppService", "Backup"]
    assert k8sx("operator", "manifests", "--dir", project).returncode == 0
    assert os.path.exists(os.path.join(project, "config/crd/bases/batch.example.com_backups.yaml"))


def test_existing_files_of_a_new_kind_are_kept(project):
    own = os.path.join(project, "appservice_operator/controllers/widget.py")
    with open(own, "w", encoding="utf-8") as f:
        f.write('"""My own widget controller."""\n')
    r = k8sx("operator", "create", "api", "--dir", project, "--group", "app", "--version", "v1", "--kind", "Widget")
    assert r.returncode == 0, r.stderr
    assert "kept  appservice_operator/controllers/widget.py (yours: not overwritten)" in r.stdout
    assert read(own) == '"""My own widget controller."""\n'


@pytest.mark.parametrize(("args", "message"), [
    (["--group", "app", "--version", "v1", "--kind", "appService"], "CamelCase"),
    (["--group", "app", "--version", "v1", "--kind", "App_Service"], "CamelCase"),
    (["--group", "App", "--version", "v1", "--kind", "Foo"], "DNS-1123 label"),
    (["--group", "app.x", "--version", "v1", "--kind", "Foo"], "DNS-1123 label"),
    (["--group", "app", "--version", "1", "--kind", "Foo"], "v<N>"),
    (["--group", "app", "--version", "v1", "--kind", "Foo", "--example", "nope"], "nope"),
])
def test_bad_names_are_usage_errors(project, args, message):
    before = read(os.path.join(project, "PROJECT"))
    r = k8sx("operator", "create", "api", "--dir", project, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert read(os.path.join(project, "PROJECT")) == before


@pytest.mark.parametrize(("args", "message"), [
    (["--domain", "example"], "with a dot"),
    (["--domain", "Example.com"], "DNS-1123 subdomain"),
    (["--domain", "example.com", "--repo", "My_Operator"], "DNS-1123 label"),
    (["--domain", "example.com", "--repo", "1op"], "start with a letter"),
])
def test_bad_init_names_are_usage_errors(tmp_path, args, message):
    d = str(tmp_path / unique("k", 20))
    r = k8sx("operator", "init", "--dir", d, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(d)


def test_conflicts_are_errors_that_change_nothing(project):
    before = read(os.path.join(project, "PROJECT"))
    r = k8sx("operator", "create", "api", "--dir", project, "--group", "app", "--version", "v2", "--kind",
             "AppService")
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    r = k8sx("operator", "init", "--dir", project, "--domain", "example.com")
    assert r.returncode == 1 and "already a k8sx operator project" in r.stderr, r.stderr
    init = os.path.join(project, "appservice_operator/controllers/__init__.py")
    with open(init, "w", encoding="utf-8") as f:
        f.write('"""No marker any more."""\n')
    r = k8sx("operator", "create", "api", "--dir", project, "--group", "app", "--version", "v1", "--kind", "Other")
    assert r.returncode == 1 and "+k8sx:scaffold:imports" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(project, "appservice_operator/controllers/other.py"))
    assert read(os.path.join(project, "PROJECT")) == before
    r = k8sx("operator", "create", "api", "--dir", os.path.dirname(project), "--group", "a", "--version", "v1",
             "--kind", "X")
    assert r.returncode == 2 and "no PROJECT file" in r.stderr, r.stderr


def test_the_generated_project_is_lint_clean(project):
    r = subprocess.run([bin_path("ruff"), "check", "--no-cache", "--output-format", "concise", "."], cwd=project,
                       capture_output=True, text=True)  # with the project's own ruff settings
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_generated_project_needs_no_k8sx_at_run_time(project):
    """Only 'make manifests' calls k8sx (the command); no module of the project imports it."""
    for root, _, files in os.walk(project):
        for name in files:
            if name.endswith(".py"):
                text = read(os.path.join(root, name))
                assert not re.search(r"^\s*(import k8sx|from k8sx[ .])", text, re.M), os.path.join(root, name)
    assert "k8sx operator manifests" in read(os.path.join(project, "Makefile"))


def test_make_targets(project):
    """``make manifests`` runs k8sx's generator; ``deploy`` puts IMG into the Deployment it applies."""
    crd = os.path.join(project, "config/crd/bases/app.example.com_appservices.yaml")
    os.remove(crd)
    env = {**os.environ, "PATH": os.path.dirname(K8SX) + os.pathsep + os.environ.get("PATH", "")}
    r = subprocess.run(["make", "-C", project, "manifests"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(crd)
    r = subprocess.run(["make", "-C", project, "-n", "deploy", "IMG=registry.example/op:v1"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "s|image: controller:latest|image: registry.example/op:v1|" in r.stdout
    assert "kubectl apply -f config/crd/bases" in r.stdout and "kubectl apply -f config/rbac" in r.stdout
