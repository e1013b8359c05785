"""Benchmark: pod and container start latency of ``k8sx runtime serve`` vs containerd, with crictl.

Uses the shared conformance harness (``../shared/conformance``), in a private copy so that it
never meets another engineer's run: ``CRIA_DIR=/tmp/cria-k8sxts``, netns ``criats-node``, bridge
``criats0``. ``containerd-up.sh`` starts the offline registry and a private containerd there; our
server starts in the same netns (``in-netns.sh``) with the reference plugins on bridge
``k8sxtscri0`` (10.197.200.0/24). Then ``latency.sh`` (wall time of whole ``crictl runp`` and
``crictl create`` + ``crictl start`` processes, median of N runs) runs against each runtime in turn,
``--rounds`` times, alternating, because this machine's load swings by +-20 %.

    .venv/bin/python bench/runtime_latency.py [--rounds 2] [--runs 10] [--keep]

Prints each round's medians and the ratio k8sx/containerd of the medians over rounds (target: <= 0.8x).
Everything started here is stopped at the end (``--keep`` leaves registry and containerd up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(os.path.dirname(HERE), "shared", "conformance")
ENV = dict(os.environ, CRIA_DIR="/tmp/cria-k8sxts", CRIA_NETNS="criats-node", CRIA_BRIDGE="criats0")
W = os.path.join(ENV["CRIA_DIR"], "k8sx")
LINE = re.compile(r"latency: runp median ([\d.]+) ms \| create\+start median ([\d.]+) ms \| crictl floor ([\d.]+)")


def harness(script: str, *args: str, check: bool = True) -> str:
    r = subprocess.run([os.path.join(HARNESS, script), *args], env=ENV, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{script} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout + r.stderr


def write_config() -> str:
    os.makedirs(os.path.join(W, "net.d"), exist_ok=True)
    conf = {"cniVersion": "1.0.0", "name": "k8sxtscri", "plugins": [
        {"type": "bridge", "bridge": "k8sxtscri0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.197.200.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": os.path.join(W, "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "loopback"}]}
    with open(os.path.join(W, "net.d", "10-k8sxts.conflist"), "w") as f:
        json.dump(conf, f)
    path = os.path.join(W, "config.toml")
    with open(path, "w") as f:
        f.write(f'listen = "unix://{W}/k8sx.sock"\nroot = "{W}/root"\nstate = "{W}/state"\n'
                f'registries_config = "{ENV["CRIA_DIR"]}/certs.d"\ncni_conf_dir = "{W}/net.d"\n'
                f'cni_bin_dir = "/usr/lib/cni"\ncni_cache_dir = "{W}/cni-cache"\ncgroup_parent = "/k8sxtscri"\n')
    return path


def measure(endpoint: str, runs: int) -> tuple[float, float, float]:
    out = subprocess.run([os.path.join(HARNESS, "latency.sh"), endpoint], env=dict(ENV, LATENCY_RUNS=str(runs)),
                         capture_output=True, text=True)
    m = LINE.search(out.stdout + out.stderr)
    if not m:
        sys.exit(f"latency.sh {endpoint} printed no result:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="leave the registry and containerd running")
    a = ap.parse_args()
    harness("containerd-up.sh")
    config = write_config()
    log = open(os.path.join(W, "server.log"), "ab")  # noqa: SIM115 (the server's stderr)
    server = subprocess.Popen([os.path.join(HARNESS, "in-netns.sh"), os.path.join(HERE, ".venv", "bin", "k8sx"),
                               "runtime", "serve", "--config", config], env=ENV, stdout=log, stderr=log)
    ours = f"unix://{W}/k8sx.sock"
    theirs = f"unix://{ENV['CRIA_DIR']}/containerd.sock"
    results: dict[str, list[tuple[float, float, float]]] = {"k8sx": [], "containerd": []}
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{W}/k8sx.sock"):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("k8sx runtime serve did not start; see " + os.path.join(W, "server.log"))
            time.sleep(0.1)
        for r in range(a.rounds):
            for name, ep in (("k8sx", ours), ("containerd", theirs)):
                results[name].append(measure(ep, a.runs))
                runp, cs, floor = results[name][-1]
                print(f"round {r + 1} {name:10s} runp {runp:6.1f} ms  create+start {cs:6.1f} ms  "
                      f"crictl floor {floor:5.1f} ms", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        log.close()
        if not a.keep:
            harness("containerd-down.sh", "--all", check=False)
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in results.items()}
    print(f"runp:         k8sx {med['k8sx'][0]:.1f} ms, containerd {med['containerd'][0]:.1f} ms -> "
          f"{med['k8sx'][0] / med['containerd'][0]:.2f}x (target <= 0.8x)")
    print(f"create+start: k8sx {med['k8sx'][1]:.1f} ms, containerd {med['containerd'][1]:.1f} ms -> "
          f"{med['k8sx'][1] / med['containerd'][1]:.2f}x (target <= 0.8x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
