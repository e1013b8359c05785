"""The command line as a whole: one app under two names, help that says what each group is for,
usage errors with a hint and exit 2 (never a traceback), and generated files kept current."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import BIN, REPO, bin_path

import k8sx

GROUPS = {
    "runtime": "CRI",
    "cni": "CNI",
    "flannel": "lease",
    "crd": "CRD",
    "operator": "operator",
    "completion": "completion",
}


def run(*args: str, prog: str = "k8sx", **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path(prog), *args], capture_output=True, text=True, timeout=60, **kw)


def test_version_under_both_names():
    assert run("--version").stdout == f"k8sx {k8sx.__version__}\n"
    assert run("--version", prog="kubectl-x").stdout == f"k8sx {k8sx.__version__}\n"


def test_kubectl_runs_the_plugin_and_help_says_kubectl_x():
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    r = subprocess.run(["kubectl", "x", "crd", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Usage: kubectl x crd [OPTIONS] COMMAND" in r.stdout
    r = subprocess.run(["kubectl", "x", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout == f"k8sx {k8sx.__version__}\n"


@pytest.mark.parametrize("group,word", GROUPS.items())
def test_each_group_says_what_it_is_for(group, word):
    top = run("--help").stdout
    assert group in top
    r = run(group, "--help")
    assert r.returncode == 0
    assert f"Usage: k8sx {group}" in r.stdout and word.lower() in r.stdout.lower()


@pytest.mark.parametrize("args,message", [
    (["bogus"], "No such command 'bogus'"),
    (["crd", "lss"], "No such command 'lss'"),
    (["--bogus"], "No such option"),
    (["crd", "ls", "--output", "xml"], "Invalid value"),
    (["completion", "tcsh"], "No such command 'tcsh'"),
])
def test_usage_errors_exit_2_with_a_hint(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Try 'k8sx" in r.stderr and "for help" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_suggests_the_nearest_command():
    assert "Did you mean 'completion'?" in run("completon").stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_the_committed_ones(shell):
    name = {"bash": "k8sx", "zsh": "_k8sx", "fish": "k8sx.fish"}[shell]
    with open(os.path.join(REPO, "completions", name), encoding="utf-8") as f:
        assert run("completion", shell).stdout == f.read()


def test_generated_files_are_current():
    r = subprocess.run([sys.executable, "-m", "k8sx.cli.gen", "--check"], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("args", [["--help"], *[[g, "--help"] for g in GROUPS]])
def test_help_imports_no_heavy_library(args):
    """The start-up budget (bench/startup.py) in a form that cannot flake: what --help imports."""
    probe = (
        "import json, sys; from k8sx.cli import entry\n"
        f"try: entry.main({args!r})\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('grpc', 'kubernetes', 'pyroute2', 'pydantic') if m in sys.modules]\n"
        "sys.stderr.write(json.dumps(heavy))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert json.loads(r.stderr.splitlines()[-1]) == []
