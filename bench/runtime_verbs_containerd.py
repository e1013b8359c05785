"""Check: ``k8sx runtime`` verbs drive containerd's CRI like crictl does, with crictl's output.

Not a timing benchmark: it lives here because it needs the shared conformance harness (a private
containerd, the offline registry, ~40 s to set up), which the test suite does not start. In the
harness's private copy (``CRIA_DIR=/tmp/cria-k8sxts``, netns ``criats-node``) it runs a pod with a web
server through our verbs against containerd's socket: runp, create --with-pull, start, ps, pods,
logs, exec -s, inspect, inspectp, stats, update, stop, rm, stopp, rmp; then compares, verb by verb,
our output with crictl's for the same objects (verbs without relative times).

    .venv/bin/python bench/runtime_verbs_containerd.py [--keep]

Prints one line per verb (ok / DIFF with a unified diff) and a summary; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(os.path.dirname(HERE), "shared", "conformance")
ENV = dict(os.environ, CRIA_DIR="/tmp/cria-k8sxts", CRIA_NETNS="criats-node", CRIA_BRIDGE="criats0")
EP = f"unix://{ENV['CRIA_DIR']}/containerd.sock"
NETNS = ["nsenter", f"--net=/run/netns/{ENV['CRIA_NETNS']}", "--"]


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [os.path.join(HERE, ".venv", "bin", "k8sx"), "runtime"] if tool == "k8sx" else ["crictl"]
    return subprocess.run([*NETNS, *cmd, "-r", EP, "-t", "60s", *args], capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="leave the registry and containerd running")
    a = ap.parse_args()
    r = subprocess.run([os.path.join(HARNESS, "containerd-up.sh")], env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"containerd-up.sh failed:\n{r.stderr[-2000:]}")
    work = tempfile.mkdtemp(prefix="k8sxts-verbs-")
    pod_cfg = os.path.join(work, "pod.json")
    ctr_cfg = os.path.join(work, "ctr.json")
    with open(pod_cfg, "w") as f:
        json.dump({"metadata": {"name": "k8sxts-verbs", "namespace": "k8sxts", "uid": "k8sxts-verbs-1"},
                   "hostname": "k8sxtsverbs", "log_directory": os.path.join(work, "logs"),
                   "labels": {"app": "verbs"}, "annotations": {"answer": "y"}, "linux": {}}, f)
    with open(ctr_cfg, "w") as f:
        json.dump({"metadata": {"name": "web"}, "image": {"image": "docker.io/library/busybox:latest"},
                   "command": ["sh", "-c", "echo hello; exec httpd -f -p 8080 -h /etc"], "log_path": "web.log",
                   "labels": {"io.kubernetes.pod.name": "k8sxts-verbs"}, "linux": {}}, f)
    failures = 0

    def step(name: str, *args: str) -> str:
        nonlocal failures
        r = run("k8sx", *args)
        print(f"{'ok ' if r.returncode == 0 else 'FAIL'} k8sx runtime {name}", flush=True)
        if r.returncode != 0:
            failures += 1
            print("   ", r.stderr.strip())
        return r.stdout.strip()

    def same(*args: str) -> None:
        nonlocal failures
        ours, theirs = run("k8sx", *args), run("crictl", *args)
        if ours.stdout == theirs.stdout and ours.returncode == theirs.returncode:
            print(f"same   {' '.join(args)[:90]}")
            return
        failures += 1
        print(f"DIFF   {' '.join(args)[:90]}")
        sys.stdout.writelines(difflib.unified_diff(theirs.stdout.splitlines(True), ours.stdout.splitlines(True),
                                                   "crictl", "k8sx", n=1))

    pod = ""
    try:
        pod = step("runp", "runp", pod_cfg)
        ctr = step("create --with-pull", "create", "--with-pull", pod, ctr_cfg, pod_cfg)
        step("start", "start", ctr)
        step("ps", "ps")
        step("pods", "pods")
        out = step("exec -s", "exec", "-s", ctr, "hostname")
        if out != "k8sxtsverbs":
            failures += 1
            print(f"    exec printed {out!r}")
        step("stats", "stats", "-s", "0")
        step("update", "update", "--memory", str(64 << 20), ctr)
        for args in (["inspect", ctr], ["inspect", "-o", "yaml", ctr], ["inspectp", pod],
                     ["inspectp", "-o", "yaml", pod], ["pods", "-v", "--id", pod], ["pods", "-o", "json", "--id", pod],
                     ["ps", "-q"], ["pods", "-q"], ["logs", ctr], ["logs", "--tail", "1", ctr]):
            same(*args)
        step("stop", "stop", ctr)
        step("rm", "rm", ctr)
        step("stopp", "stopp", pod)
        step("rmp", "rmp", pod)
        pod = ""
    finally:
        if pod:
            run("k8sx", "rmp", "-f", pod)
        subprocess.run(["rm", "-rf", work], check=False)
        if not a.keep:
            subprocess.run([os.path.join(HARNESS, "containerd-down.sh"), "--all"], env=ENV, capture_output=True)
    print(f"runtime verbs against containerd: {'all ok' if not failures else f'{failures} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
