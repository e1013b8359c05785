"""Shell completion as users meet it: a TAB in real bash, zsh and fish, and ``kubectl x <TAB>``
through kubectl's plugin-completion protocol; plus the engine's answers and its import budget."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kubeapi import write_kubeconfig
from shell import Shell
from support import BIN, REPO

from k8sx.cli import complete, tree

COMPLETIONS = os.path.join(REPO, "completions")


def shell_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_K8SX", "KUBECONFIG"))}
    env.update(PATH=f"{BIN}:{os.environ['PATH']}", TERM="xterm", HOME=str(tmp_path), INPUTRC="/dev/null")
    env.update(extra)
    return env


@pytest.fixture
def kubeconfig(tmp_path):
    """A kubeconfig with three contexts; no server needs to run for completing their names."""
    return write_kubeconfig(str(tmp_path / "kubeconfig"), "http://127.0.0.1:9", context="kind-dev",
                            extra_contexts=("prod-eu", "prod-us"))


# -- the engine -------------------------------------------------------------------------------------

def values(words: list[str], incomplete: str) -> list[str]:
    found, _ = complete.candidates(words, incomplete)
    return [v for v, _ in found]


def test_commands_options_and_choices():
    assert values([], "c") == ["cni", "completion", "crd"]
    assert values(["completion"], "") == ["bash", "fish", "zsh"]
    assert values(["crd", "ls"], "--o") == ["--output"]
    assert values(["crd", "ls", "-o"], "") == ["table", "json", "yaml"]
    assert values(["crd", "ls"], "--output=j") == ["--output=json"]
    found, _ = complete.candidates([], "")
    assert dict(found)["crd"].startswith("CRDs:")  # help text travels with each value


def test_values_of_free_form_options_fall_back_to_files():
    found, files = complete.candidates(["crd", "ls", "--kubeconfig"], "")
    assert found == [] and files


def test_kube_contexts_from_kubeconfig(kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    assert values(["crd", "ls", "--context"], "") == ["kind-dev", "prod-eu", "prod-us"]
    assert values(["crd", "ls", "--context"], "prod") == ["prod-eu", "prod-us"]
    # before the command name too (the flags are hoisted there when the command runs)
    assert values(["--context"], "prod-u") == ["prod-us"]
    # --kubeconfig on the line wins over $KUBECONFIG, as in kubectl
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert values(["crd", "ls", "--kubeconfig", kubeconfig, "--context"], "k") == ["kind-dev"]


def test_hoisting_kube_flags_to_the_command_that_takes_them():
    root = tree.load()
    assert tree.hoist_kube_flags(root, ["--context", "c1", "crd", "ls", "-o", "json"]) == \
        ["crd", "ls", "--context", "c1", "-o", "json"]
    assert tree.hoist_kube_flags(root, ["crd", "-n", "ns", "--as=bob", "ls"]) == ["crd", "ls", "-n", "ns", "--as=bob"]
    # a command that does not talk to an API server keeps the words, so the parser reports them
    assert tree.hoist_kube_flags(root, ["--context", "c1", "completion", "bash"]) == \
        ["--context", "c1", "completion", "bash"]


def test_completion_imports_no_framework_and_no_heavy_library(kubeconfig):
    probe = (
        "import os, sys; from k8sx.cli import entry; entry.main(); "
        "heavy = [m for m in ('typer', 'rich', 'click', 'grpc', 'kubernetes', 'pyroute2') if m in sys.modules]; "
        "sys.stderr.write(repr(heavy))"
    )
    env = dict(os.environ, _K8SX_COMPLETE="bash", COMP_LINE="k8sx crd ls --context ", KUBECONFIG=kubeconfig)
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["kind-dev", "prod-eu", "prod-us"]
    assert r.stderr == "[]"


# -- real shells, as a user types ----------------------------------------------------------------------

def test_bash_with_bash_completion(tmp_path, kubeconfig):
    sh = Shell(["bash", "--norc", "--noprofile", "-i"], shell_env(tmp_path, PS1="$ ", KUBECONFIG=kubeconfig))
    try:
        sh.run(f"source /usr/share/bash-completion/bash_completion; source {COMPLETIONS}/k8sx")
        assert "k8sx completion bash " in sh.type("k8sx completion b\t", expect="bash ")
        listing = sh.type("k8sx c\t\t", expect="crd")
        assert "cni" in listing and "completion" in listing and "crd" in listing
        assert "k8sx crd ls --context kind-dev " in sh.type("k8sx crd ls --context ki\t", expect="kind-dev ")
        # --opt=value: bash splits at '=', and the reply is relative to the word after it
        assert "--output=yaml" in sh.type("k8sx crd ls --output=y\t", expect="yaml")
    finally:
        sh.close()


def test_kubectl_plugin_completion_protocol(kubeconfig):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", KUBECONFIG=kubeconfig)
    r = subprocess.run(["kubectl", "__complete", "x", "crd", ""], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == ":4"
    assert {line.split("\t")[0] for line in lines[:-1]} >= {"ls", "generate", "validate"}
    r = subprocess.run(["kubectl", "__complete", "x", "crd", "ls", "--context", "prod"], env=env,
                       capture_output=True, text=True)
    assert r.stdout.splitlines() == ["prod-eu\tcluster nowhere, user tester", "prod-us\tcluster nowhere, user tester",
                                     ":4"]
    # a free-form value lets the shell complete file names (cobra's default directive)
    r = subprocess.run(["kubectl", "__complete", "x", "crd", "ls", "--kubeconfig", ""], env=env,
                       capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == ":0"


def test_kubectl_x_tab_in_bash(tmp_path, kubeconfig):
    sh = Shell(["bash", "--norc", "--noprofile", "-i"], shell_env(tmp_path, PS1="$ ", KUBECONFIG=kubeconfig))
    try:
        sh.run("source /usr/share/bash-completion/bash_completion; source <(kubectl completion bash)")
        assert "kubectl x completion " in sh.type("kubectl x comp\t", expect="completion ")
        assert "--context prod-" in sh.type("kubectl x crd ls --context pr\t", expect="prod-")
    finally:
        sh.close()


def test_zsh(tmp_path):
    sh = Shell(["zsh", "-f", "-i"], shell_env(tmp_path, PS1="% "))
    try:
        sh.run(f"autoload -Uz compinit && compinit -u; source {COMPLETIONS}/_k8sx")
        assert "k8sx completion bash " in sh.type("k8sx completion b\t", expect="bash ")
        listing = sh.type("k8sx c\t\t", expect="crd")
        assert "cni" in listing and "-- CRDs:" in listing  # zsh shows each value with its help
        assert "k8sx crd ls --output table " in sh.type("k8sx crd ls --output t\t", expect="table ")
    finally:
        sh.close()


def test_fish(tmp_path):
    script = f"source {COMPLETIONS}/k8sx.fish; complete -C 'k8sx c'; complete -C 'k8sx crd ls -o '"
    r = subprocess.run(["fish", "--no-config", "-c", script], env=shell_env(tmp_path), capture_output=True,
                       text=True, check=True)
    lines = r.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["cni", "completion", "crd", "json", "table", "yaml"]
    assert lines[2].split("\t")[1].startswith("CRDs:")
