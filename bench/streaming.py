"""Benchmark: streaming exec round trip and port-forward throughput, k8sx against containerd, same run.

Uses the conformance harness's private copy (``CRIA_DIR=/tmp/cria-k8sxtx``, netns ``criatx-node``:
registry + containerd, started here unless already up) and a ``k8sx runtime serve`` started in the
same namespace. In each runtime it runs a busybox pod whose web server serves a 64 MiB file, then
measures with k8sx's streaming client (the same client for both, so the servers are compared):

* exec round trip: Exec RPC + SPDY upgrade + ``echo hi`` + exit status, median of N;
* crictl exec wall time (Go's client, process start-up included), median of N;
* port-forward throughput: the 64 MiB file downloaded through one SPDY port-forward session, best of 3.

    .venv/bin/python bench/streaming.py [--runs 30] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = "/work/shared/conformance"
ENV = dict(os.environ, CRIA_DIR="/tmp/cria-k8sxtx", CRIA_NETNS="criatx-node", CRIA_BRIDGE="criatx0")
NETNS = ENV["CRIA_NETNS"]
CONTAINERD = f"unix://{ENV['CRIA_DIR']}/containerd.sock"
BIG_MB = 64


def in_netns(fn: Callable[[], Any]) -> Any:
    from k8sx.net import ns

    out: list[Any] = []

    def run() -> None:
        fd = ns.open_netns(f"/run/netns/{NETNS}")
        try:
            ns._setns(fd)
        finally:
            os.close(fd)
        out.append(fn())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if not out:
        raise SystemExit("benchmark step failed (see the traceback above)")
    return out[0]


def cli(ep: str, *args: str) -> str:
    r = subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", "--", os.path.join(HERE, ".venv/bin/k8sx"),
                        "runtime", "-r", ep, "-t", "120s", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"k8sx runtime {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def start_k8sx(work: str) -> tuple[subprocess.Popen[bytes], str]:
    netd = os.path.join(work, "net.d")
    os.makedirs(netd)
    with open(os.path.join(netd, "10-k8sxtxb.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "k8sxtxb", "plugins": [
            {"type": "bridge", "bridge": "k8sxtxbb0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.91.0.0/16"}]],
                      "dataDir": os.path.join(work, "ipam")}},
            {"type": "loopback"}]}, f)
    with open(os.path.join(work, "config.toml"), "w") as f:
        f.write(f'registries_config = "{ENV["CRIA_DIR"]}/certs.d"\ncni_cache_dir = "{work}/cni-cache"\n'
                f'cgroup_parent = "/k8sxtxbench"\n')
    ep = f"unix://{work}/k8sx.sock"
    log = open(os.path.join(work, "server.log"), "wb")  # noqa: SIM115 (the child's)
    p = subprocess.Popen(["nsenter", f"--net=/run/netns/{NETNS}", "--", os.path.join(HERE, ".venv/bin/k8sx"),
                          "runtime", "serve", "--listen", ep, "--root", f"{work}/root", "--state", f"{work}/state",
                          "--cni-conf-dir", netd, "--cni-bin-dir", "/usr/lib/cni", "--config",
                          f"{work}/config.toml"], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not os.path.exists(f"{work}/k8sx.sock"):
        if p.poll() is not None or time.monotonic() > deadline:
            with open(os.path.join(work, "server.log")) as f:
                raise SystemExit("k8sx runtime serve did not start: " + f.read())
        time.sleep(0.05)
    return p, ep


def setup_pod(ep: str, work: str, tag: str) -> tuple[str, str]:
    pod_cfg, ctr_cfg = os.path.join(work, f"pod-{tag}.json"), os.path.join(work, f"ctr-{tag}.json")
    with open(pod_cfg, "w") as f:
        json.dump({"metadata": {"name": f"k8sxtx-bench-{tag}", "namespace": "k8sxtx", "uid": f"k8sxtx-{tag}"},
                   "log_directory": os.path.join(work, "logs", tag), "linux": {}}, f)
    with open(ctr_cfg, "w") as f:
        json.dump({"metadata": {"name": "web"}, "image": {"image": "docker.io/library/busybox:latest"},
                   "command": ["sh", "-c", f"mkdir -p /tmp/w && dd if=/dev/zero of=/tmp/w/big bs=1M count={BIG_MB} "
                               "2>/dev/null && exec httpd -f -p 8080 -h /tmp/w"],
                   "log_path": "web.log", "linux": {}}, f)
    pod = cli(ep, "runp", pod_cfg)
    ctr = cli(ep, "create", "--with-pull", pod, ctr_cfg, pod_cfg)
    cli(ep, "start", ctr)
    deadline = time.monotonic() + 30
    while "big" not in cli(ep, "exec", "-s", ctr, "ls", "/tmp/w"):
        if time.monotonic() > deadline:
            raise SystemExit("the web container did not come up")
        time.sleep(0.2)
    time.sleep(0.5)
    return pod, ctr


def stub(ep: str) -> Any:
    from k8sx.cri.client import Client, resolve

    return Client(resolve(runtime_endpoint=ep, image_endpoint=ep, config="/dev/null", timeout="60s", debug=False))


def exec_round_trip(ep: str, ctr: str, runs: int) -> float:
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.streaming.client import stream_command

    times = []
    with stub(ep) as c:
        for _ in range(runs + 1):
            out = bytearray()
            t0 = time.perf_counter()
            url = c.runtime.Exec(api_pb2.ExecRequest(container_id=ctr, cmd=["echo", "hi"], stdout=True,
                                                     stderr=True)).url
            code = stream_command(url, stdin=None, stdout=out.extend, stderr=out.extend)
            times.append(time.perf_counter() - t0)
            assert code == 0 and out == b"hi\n", (code, out)
    return statistics.median(times[1:]) * 1000


def crictl_exec(ep: str, ctr: str, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", "--", "crictl", "-r", ep, "exec", ctr, "echo",
                            "hi"], capture_output=True)
        times.append(time.perf_counter() - t0)
        assert r.stdout == b"hi\n", r
    return statistics.median(times[1:]) * 1000


def pf_throughput(ep: str, pod: str) -> float:
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.streaming.client import PortForwarder

    with stub(ep) as c:
        url = c.runtime.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod, port=[8080])).url
    fwd = PortForwarder(url, [(0, 8080)])
    t = threading.Thread(target=fwd.serve, daemon=True)
    t.start()
    port = fwd.bound[0][1]

    def get() -> int:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            n = 0
            while chunk := s.recv(1 << 20):
                n += len(chunk)
        return n

    best = 0.0
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            n = get()
            dt = time.perf_counter() - t0
            assert n > BIG_MB << 20, n
            best = max(best, n / dt / 1e6)
    finally:
        fwd.close()
        t.join(5)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="leave the registry and containerd running")
    a = ap.parse_args()
    sys.path.insert(0, HERE)
    started = False
    if not os.path.exists(CONTAINERD.removeprefix("unix://")):
        r = subprocess.run([os.path.join(HARNESS, "containerd-up.sh")], env=ENV, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"containerd-up.sh failed:\n{r.stderr[-2000:]}")
        started = True
    work = tempfile.mkdtemp(prefix="k8sxtx-bench-")
    server, ep = start_k8sx(work)
    pods: list[tuple[str, str]] = []
    try:
        results: dict[str, dict[str, float]] = {}
        for name, endpoint in (("k8sx", ep), ("containerd", CONTAINERD)):
            pod, ctr = setup_pod(endpoint, work, name)
            pods.append((endpoint, pod))
            # the client runs in the node's namespace (the streaming servers listen on its loopback)
            results[name] = {"exec": in_netns(lambda e=endpoint, c=ctr: exec_round_trip(e, c, a.runs)),
                             "crictl": crictl_exec(endpoint, ctr, a.runs),
                             "pf": in_netns(lambda e=endpoint, p=pod: pf_throughput(e, p))}
        k, c = results["k8sx"], results["containerd"]
        print(f"exec round trip (Exec + SPDY + echo), median of {a.runs}: k8sx {k['exec']:.1f} ms, "
              f"containerd {c['exec']:.1f} ms -> {k['exec'] / c['exec']:.2f}x")
        print(f"crictl exec wall time, median of {a.runs}: k8sx {k['crictl']:.1f} ms, containerd {c['crictl']:.1f} ms"
              f" -> {k['crictl'] / c['crictl']:.2f}x")
        print(f"port-forward throughput ({BIG_MB} MiB over HTTP, best of 3): k8sx {k['pf']:.0f} MB/s, "
              f"containerd {c['pf']:.0f} MB/s -> {k['pf'] / c['pf']:.2f}x")
    finally:
        for endpoint, pod in pods:
            subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", "--", os.path.join(HERE, ".venv/bin/k8sx"),
                            "runtime", "-r", endpoint, "rmp", "-f", pod], capture_output=True)
        server.terminate()
        server.wait(20)
        subprocess.run(["sh", "-c", f"grep ' {work}' /proc/self/mountinfo | cut -d' ' -f5 | sort -r | "
                        "xargs -r -n1 umount -l"], check=False)
        shutil.rmtree(work, ignore_errors=True)
        for cg in os.listdir("/sys/fs/cgroup"):   # every hierarchy (v1 controllers, systemd, unified)
            subprocess.run(["sh", "-c", f"find /sys/fs/cgroup/{cg}/k8sxtxbench -depth -type d -exec rmdir {{}} + "
                            "2>/dev/null"], check=False)
        subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", "--", "ip", "link", "del", "k8sxtxbb0"],
                       capture_output=True)
        if started and not a.keep:
            subprocess.run([os.path.join(HARNESS, "containerd-down.sh"), "--all"], env=ENV, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
