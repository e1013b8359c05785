"""Benchmark: the bridge + host-local + loopback chain, reference plugins vs k8sx's, same run.

Why: issue 3's target is ADD <= 1.5x and DEL <= 1.0x the reference chain, both driven the same
way. Two drivings are measured, interleaved iteration by iteration so that load on the machine
hits both sides alike:

(a) runner: ``k8sx.cni.runner.Runner`` (the CRI server's path). It execs the reference plugins
    and runs ours in-process (their executables carry the k8sx marker).
(b) exec: every plugin exec'ed as cnitool does (CNI_* env + stdin, chained by hand), for the
    reference binaries and for our executables (started by the native client, and by Python) with
    ``k8sx cni plugind`` running, and (fewer rounds) without it (the in-process fallback).

Everything happens in namespaces this script creates (node ``k8sxtpbnode*``, pod ``k8sxtpbpod*``)
and removes. Run as root: ``.venv/bin/python bench/cni_chain.py [-n 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from k8sx.cni.conf import conf_list_from_bytes
from k8sx.cni.install import install
from k8sx.cni.runner import Runner, RuntimeConf
from k8sx.net import ns

TAG = "k8sxtpb"
REF_DIR = "/usr/lib/cni"


def chain(prefix: str, name: str, bridge: str, subnet: str, data_dir: str, portmap: bool = False) -> dict:
    plugins = [
        {"type": prefix + "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": prefix + "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": prefix + "loopback"}]
    if portmap:
        plugins.insert(1, {"type": prefix + "portmap", "capabilities": {"portMappings": True}, "snat": True})
    return {"cniVersion": "1.0.0", "name": name, "plugins": plugins}


class ExecDriver:
    """cnitool's way: exec each plugin of the list with CNI_* and its stdin (prevResult chained)."""

    def __init__(self, conflist: dict, bin_dir: str, netns: str, env: dict[str, str]) -> None:
        self.conflist = conflist
        self.bin_dir = bin_dir
        self.env = dict(env, CNI_CONTAINERID=f"{TAG}-exec", CNI_NETNS=netns, CNI_IFNAME="eth0",
                        CNI_PATH=f"{bin_dir}:{REF_DIR}")
        self.result: dict | None = None

    def _exec(self, command: str, plugin: dict, prev: dict | None) -> dict | None:
        conf = dict(plugin, name=self.conflist["name"], cniVersion=self.conflist["cniVersion"])
        if prev is not None:
            conf["prevResult"] = prev
        proc = subprocess.run([os.path.join(self.bin_dir, plugin["type"])], input=json.dumps(conf).encode(),
                              env=dict(self.env, CNI_COMMAND=command), capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{plugin['type']} {command}: {proc.stdout.decode()} {proc.stderr.decode()}")
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def add(self) -> None:
        prev = None
        for plugin in self.conflist["plugins"]:
            prev = self._exec("ADD", plugin, prev)
        self.result = prev

    def delete(self) -> None:
        for plugin in reversed(self.conflist["plugins"]):
            self._exec("DEL", plugin, self.result)


class RunnerDriver:
    def __init__(self, conflist: dict, bin_dir: str, netns: str, cache_dir: str, cap: dict | None = None) -> None:
        self.netconf = conf_list_from_bytes(json.dumps(conflist).encode())
        self.runner = Runner([bin_dir, REF_DIR], cache_dir=cache_dir)
        self.rt = RuntimeConf(container_id=f"{TAG}-runner", netns=netns, ifname="eth0", capability_args=cap or {})

    def add(self) -> None:
        self.runner.add_network(self.netconf, self.rt)

    def delete(self) -> None:
        self.runner.del_network(self.netconf, self.rt)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure(drivers: dict[str, object], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Interleave: each round runs ADD then DEL of every driver in turn (one warm-up round first)."""
    out: dict[str, dict[str, list[float]]] = {k: {"add": [], "del": []} for k in drivers}
    for i in range(rounds + 1):
        for key, drv in drivers.items():
            a = timed(drv.add)  # type: ignore[attr-defined]
            d = timed(drv.delete)  # type: ignore[attr-defined]
            if i:
                out[key]["add"].append(a)
                out[key]["del"].append(d)
    return out


def report(title: str, data: dict[str, dict[str, list[float]]], ref_key: str) -> None:
    print(f"\n{title}")
    print(f"  {'':28} {'ADD median':>10} {'ADD p90':>8} {'DEL median':>10} {'DEL p90':>8} {'ADD ratio':>9} "
          f"{'DEL ratio':>9}")
    ref = data[ref_key]
    for key, vals in data.items():
        add_m, del_m = statistics.median(vals["add"]), statistics.median(vals["del"])
        p90 = {k: sorted(v)[max(0, int(len(v) * 0.9) - 1)] for k, v in vals.items()}
        ra = add_m / statistics.median(ref["add"])
        rd = del_m / statistics.median(ref["del"])
        print(f"  {key:28} {add_m:10.1f} {p90['add']:8.1f} {del_m:10.1f} {p90['del']:8.1f} {ra:9.2f} {rd:9.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=20)
    parser.add_argument("--fallback-rounds", type=int, default=3)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark creates network namespaces", file=sys.stderr)
        return 2

    run_id = uuid.uuid4().hex[:6]
    node, pod = f"{TAG}node{run_id}", f"{TAG}pod{run_id}"
    work = f"/run/{TAG}-{run_id}"
    sock = f"{work}/plugind.sock"
    bin_dir = f"{work}/bin"
    daemon = None
    created = []
    try:
        for name in (node, pod):
            subprocess.run(["ip", "netns", "add", name], check=True)
            created.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        podns = f"/var/run/netns/{pod}"
        install(bin_dir)
        py_dir = f"{work}/pybin"  # the same executables starting Python instead of the native client
        install(py_dir, native=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        daemon = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "k8sx"), "cni", "plugind",
                                   "--socket", sock], stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        env_daemon = dict(env, K8SX_CNI_PLUGIND_SOCKET=sock)
        env_nodaemon = dict(env, K8SX_CNI_PLUGIND_SOCKET=f"{work}/absent.sock")

        def conf(prefix: str, kind: str, n: int, portmap: bool = False) -> dict:
            return chain(prefix, f"{TAG}-{kind}", f"{TAG}br{n}", f"10.198.{200 + n}.0/24", f"{work}/ipam", portmap)

        cap = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}

        nodefd = ns.open_netns(f"/var/run/netns/{node}")
        with ns.entered(nodefd):
            runner = measure({
                "reference (exec)": RunnerDriver(conf("", "ref", 0), bin_dir, podns, f"{work}/cache"),
                "k8sx (in-process)": RunnerDriver(conf("k8sx-", "ours", 1), bin_dir, podns, f"{work}/cache"),
            }, opts.rounds)
            portmap = measure({
                "reference (exec)": RunnerDriver(conf("", "refpm", 6, True), bin_dir, podns, f"{work}/cache", cap),
                "k8sx (in-process)": RunnerDriver(conf("k8sx-", "ourspm", 7, True), bin_dir, podns, f"{work}/cache",
                                                  cap),
            }, opts.rounds)
            execd = measure({
                "reference": ExecDriver(conf("", "ref", 2), REF_DIR, podns, env),
                "k8sx native client + plugind": ExecDriver(conf("k8sx-", "ours", 3), bin_dir, podns, env_daemon),
                "k8sx python client + plugind": ExecDriver(conf("k8sx-", "ourspy", 8), py_dir, podns, env_daemon),
            }, opts.rounds)
            fallback = measure({
                "reference": ExecDriver(conf("", "ref", 4), REF_DIR, podns, env),
                "k8sx executable, no daemon": ExecDriver(conf("k8sx-", "ours", 5), bin_dir, podns, env_nodaemon),
            }, opts.fallback_rounds)
        os.close(nodefd)
        load = os.getloadavg()[0]
        print(f"bridge(isGateway, ipMasq, hairpin) + host-local + loopback, ms per chain call; "
              f"load average {load:.1f}")
        report(f"(a) driven by k8sx.cni.runner, {opts.rounds} rounds", runner, "reference (exec)")
        report(f"(a) + portmap (hostPort 18080, snat) between bridge and loopback, {opts.rounds} rounds", portmap,
               "reference (exec)")
        report(f"(b) each plugin exec'ed (cnitool's way), {opts.rounds} rounds", execd, "reference")
        report(f"(b') executables without plugind, {opts.fallback_rounds} rounds", fallback, "reference")
        print("\ntarget (issue 3): ADD ratio <= 1.5, DEL ratio <= 1.0")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(5)
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
