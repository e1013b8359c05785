"""Our streaming client verbs against containerd's CRI (the reference): ``exec`` (output, stderr, exit
code, stdin, tty), ``attach`` and ``port-forward`` work on containerd's streaming server as on ours,
and ``exec`` prints what crictl prints.

containerd, its registry and images come from the conformance harness, in a private copy
(``CRIA_DIR=/tmp/k8sxtxt-cria``, netns ``criatxt-node``, bridge ``criatxt0``: the harness wants the
``cria`` prefix) started for this module and removed after it (~40 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from support import bin_path

HARNESS = "/work/shared/conformance"
ENV = dict(os.environ, CRIA_DIR="/tmp/k8sxtxt-cria", CRIA_NETNS="criatxt-node", CRIA_BRIDGE="criatxt0",
           CRIA_SH_BUSYBOX="/bin/busybox")
EP = f"unix://{ENV['CRIA_DIR']}/containerd.sock"
NS = ["nsenter", f"--net=/run/netns/{ENV['CRIA_NETNS']}", "--"]
IMAGE = "docker.io/library/busybox:latest"


def k8sx(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*NS, bin_path("k8sx"), "runtime", "-r", EP, "-t", "60s", *args], input=input,
                          capture_output=True, timeout=120)


def crictl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*NS, "crictl", "-r", EP, "-t", "60s", *args], input=input, capture_output=True,
                          timeout=120)


def ok(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


@pytest.fixture(scope="module")
def containerd() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("needs root: namespaces, containerd")
    work = tempfile.mkdtemp(prefix="k8sxtx-cd-")
    try:
        r = subprocess.run([os.path.join(HARNESS, "containerd-up.sh")], env=ENV, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield work
    finally:
        subprocess.run([os.path.join(HARNESS, "containerd-down.sh"), "--all"], env=ENV, capture_output=True,
                       timeout=300)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ENV["CRIA_DIR"], ignore_errors=True)


@pytest.fixture(scope="module")
def pod(containerd: str) -> Iterator[tuple[str, str, str]]:
    work = containerd
    pod_cfg = os.path.join(work, "pod.json")
    with open(pod_cfg, "w") as f:
        json.dump({"metadata": {"name": "k8sxtx-stream", "namespace": "k8sxtx", "uid": "k8sxtx-stream-1"},
                   "log_directory": os.path.join(work, "logs"), "linux": {}}, f)

    def ctr_cfg(name: str, command: list[str], **extra: object) -> str:
        path = os.path.join(work, f"{name}.json")
        with open(path, "w") as f:
            json.dump({"metadata": {"name": name}, "image": {"image": IMAGE}, "command": command,
                       "log_path": f"{name}.log", "linux": {}, **extra}, f)
        return path

    pod = ok(k8sx("runp", pod_cfg))
    try:
        web = ok(k8sx("create", "--with-pull", pod, ctr_cfg("web", [
            "sh", "-c", "mkdir -p /tmp/w && echo hello-cd > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"]),
            pod_cfg))
        ok(k8sx("start", web))
        sh = ok(k8sx("create", pod, ctr_cfg("sh", ["sh"], stdin=True, stdin_once=True), pod_cfg))
        ok(k8sx("start", sh))
        yield pod, web, sh
    finally:
        k8sx("rmp", "-f", pod)


def test_exec_like_crictl(pod: tuple[str, str, str]) -> None:
    _, web, _ = pod
    cmd = ["sh", "-c", "echo out; echo err >&2; exit 5"]
    ours, theirs = k8sx("exec", web, *cmd), crictl("exec", web, *cmd)
    assert ours.stdout == theirs.stdout == b"out\n"
    assert ours.returncode == 5 and b"err" in ours.stderr
    r = k8sx("exec", "-i", web, "sh", "-c", "tr a-z A-Z", input=b"containerd\n")
    assert (r.returncode, r.stdout) == (0, b"CONTAINERD\n")
    # a terminal's stdin stays open while the command runs (containerd hangs up a tty whose stdin ended)
    p = subprocess.Popen([*NS, bin_path("k8sx"), "runtime", "-r", EP, "exec", "-it", web, "sh", "-c", "tty"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdin is not None
    out = p.stdout.read()
    assert p.wait(30) == 0
    p.stdin.close()
    assert out.startswith(b"/dev/pts/") and out.endswith(b"\r\n"), out


def test_attach(pod: tuple[str, str, str]) -> None:
    _, _, sh = pod
    r = k8sx("attach", "-i", sh, input=b"echo attached-cd\n")
    assert (r.returncode, r.stdout) == (0, b"attached-cd\n"), r.stderr


def test_port_forward(pod: tuple[str, str, str]) -> None:
    pod_id, web, _ = pod
    deadline = time.monotonic() + 20
    while b"hello-cd" not in k8sx("exec", "-s", web, "wget", "-qO-", "http://127.0.0.1:8080/").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    p = subprocess.Popen([*NS, bin_path("k8sx"), "runtime", "-r", EP, "port-forward", pod_id, "0:8080"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert m, line
        r = subprocess.run([*NS, "busybox", "wget", "-qO-", f"http://127.0.0.1:{m.group(1)}/"], capture_output=True,
                           timeout=30)
        assert r.stdout == b"hello-cd\n", r.stderr
    finally:
        p.terminate()
        p.wait(10)
