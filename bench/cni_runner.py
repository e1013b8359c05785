"""Benchmark: what the k8sx runner adds on top of the plugins it runs (libcni's role), and the CLI.

Why: the runner must not be the slow link of pod networking. With the reference plugins (exec'ed
either way) it compares, interleaved round by round so machine load hits both alike:
  * ``Runner`` in-process (the CRI server's path) vs exec'ing the same plugins by hand with the
    same stdin chaining (no cache, no validation): the runner's own overhead;
  * the ``k8sx cni add|del`` process end to end vs the in-process runner: the CLI's start-up.
Everything runs in namespaces this script creates (``k8sxtrb*``) and removes. Run as root:
``.venv/bin/python bench/cni_runner.py [-n 20]`` (it re-executes itself inside the node netns).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REF = "/usr/lib/cni"


def conflist(data_dir: str, bridge: str, loopback_only: bool) -> dict:
    if loopback_only:
        return {"cniVersion": "1.0.0", "name": "k8sxtrb-lo", "plugins": [{"type": "loopback"}]}
    return {"cniVersion": "1.0.0", "name": "k8sxtrb-br", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": "10.199.99.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "loopback"}]}


def by_hand(conf: dict, command: str, env: dict[str, str]) -> None:
    """The plugins exec'ed directly, prevResult chained as libcni does, DEL in reverse."""
    plugins = conf["plugins"] if command == "ADD" else list(reversed(conf["plugins"]))
    prev = None
    for p in plugins:
        stdin = dict(p, name=conf["name"], cniVersion=conf["cniVersion"])
        if prev is not None and command == "ADD":
            stdin["prevResult"] = prev
        out = subprocess.run([os.path.join(REF, p["type"])], input=json.dumps(stdin).encode(),
                             env=dict(env, CNI_COMMAND=command), capture_output=True, check=True).stdout
        prev = json.loads(out) if command == "ADD" else None


def inside(rounds: int, pod: str, work: str) -> None:
    from k8sx.cni.conf import conf_list_from_bytes
    from k8sx.cni.runner import Runner, RuntimeConf

    netns = f"/var/run/netns/{pod}"
    k8sx = os.path.join(os.path.dirname(sys.executable), "k8sx")
    print(f"ms per chain call, medians of {rounds}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'':34}{'ADD':>8}{'DEL':>8}{'ADD ratio':>11}{'DEL ratio':>11}")
    for loopback_only in (True, False):
        conf = conflist(os.path.join(work, "host-local"), "k8sxtrbbr0", loopback_only)
        conf_dir = os.path.join(work, "net.d")
        os.makedirs(conf_dir, exist_ok=True)
        with open(os.path.join(conf_dir, "10.conflist"), "w") as f:
            json.dump(conf, f)
        net = conf_list_from_bytes(json.dumps(conf).encode())
        runner = Runner([REF], cache_dir=os.path.join(work, "cache"))
        t: dict[str, list[float]] = {k: [] for k in ("hand ADD", "hand DEL", "run ADD", "run DEL", "cli ADD",
                                                      "cli DEL")}
        for i in range(rounds):
            cid = f"k8sxtrb-{i}"
            env = dict(os.environ, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME="eth0", CNI_ARGS="",
                       CNI_PATH=REF)
            rt = RuntimeConf(cid, netns, "eth0")
            cli = [k8sx, "cni", None, conf["name"], netns, "--conf-dir", conf_dir, "--cni-path", REF,
                   "--cache-dir", os.path.join(work, "cache"), "--container-id", cid]
            for label in ("hand", "run", "cli"):
                for command in ("ADD", "DEL"):
                    start = time.perf_counter()
                    if label == "hand":
                        by_hand(conf, command, env)
                    elif label == "run":
                        (runner.add_network if command == "ADD" else runner.del_network)(net, rt)
                    else:
                        subprocess.run([x or command.lower() for x in cli], check=True, capture_output=True)
                    t[f"{label} {command}"].append((time.perf_counter() - start) * 1000)
        med = {k: statistics.median(v) for k, v in t.items()}
        name = "loopback" if loopback_only else "bridge+host-local(ipMasq)+loopback"
        for label, desc in (("hand", "plugins exec'ed by hand"), ("run", "k8sx Runner (in-process)"),
                            ("cli", "k8sx cni add|del (process)")):
            a, d = med[f"{label} ADD"], med[f"{label} DEL"]
            print(f"  {name[:12]:12} {desc:21}{a:8.1f}{d:8.1f}{a / med['hand ADD']:11.2f}{d / med['hand DEL']:11.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rounds", type=int, default=20)
    ap.add_argument("--inside", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args.rounds, *args.inside)
        return 0
    tag = uuid.uuid4().hex[:6]
    node, pod = f"k8sxtrbnode{tag}", f"k8sxtrbpod{tag}"
    work = tempfile.mkdtemp(prefix="k8sxtrb-")
    try:
        for ns in (node, pod):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        return subprocess.run(["ip", "netns", "exec", node, sys.executable, os.path.abspath(__file__), "-n",
                               str(args.rounds), "--inside", pod, work]).returncode
    finally:
        for ns in (pod, node):
            subprocess.run(["ip", "netns", "del", ns], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
