"""Benchmark: unary CRI latency of ``k8sx runtime serve`` vs containerd, and our client verbs vs crictl.

Server side: the same Python gRPC client (``k8sx.cri.client.Client``, one channel) calls Version,
ListImages and ImageStatus N times against our server and against a private containerd (CRI plugin,
own root and socket under a k8sxtc-bench-* temp dir), both holding the same image pulled from a
loopback docker-registry started here. Client side: wall time of whole processes,
``k8sx runtime images|version`` vs ``crictl images|version`` against the same endpoint (crictl is
cri-tools v1.26.1, not packaged in Debian; that part is skipped without it).

    .venv/bin/python bench/cri_api.py [-n 1000] [--cli-runs 20]

Prints p50/p99 per call and the ratio k8sx/containerd (lower is better; <= 1.0x means not slower).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tests", "cri"))

from critools import K8SX, containerd, serving  # noqa: E402
from imagetools import Registry, layer_tar  # noqa: E402

from k8sx.cri.client import Client, Settings  # noqa: E402
from k8sx.cri.images import build  # noqa: E402


def timed_calls(c: Client, fn, n: int) -> list[float]:
    for _ in range(50):  # warm-up
        fn(c)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn(c)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def wall(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--cli-runs", type=int, default=20)
    args = ap.parse_args()
    reg = Registry("bench")
    d1 = tempfile.mkdtemp(prefix="k8sxtc-bench-ctrd-")
    d2 = tempfile.mkdtemp(prefix="k8sxtc-bench-ours-")
    try:
        img = build.make_image([layer_tar({"etc/": None, "etc/k8sxtc": "bench"})], {"Cmd": ["sh"]})
        ref = reg.push(reg.repo("bench") + ":v1", img)
        with containerd(d1, [reg.host]) as ctrd, serving(d2) as ours:
            eps = {"containerd": ctrd, "k8sx": ours.endpoint}
            calls = {
                "Version": lambda c: c.version(),
                "ListImages": lambda c: c.list_images(),
                "ImageStatus": lambda c: c.image_status(ref),
            }
            results: dict[str, dict[str, list[float]]] = {}
            for name, ep in eps.items():
                with Client(Settings(runtime_endpoint=ep, timeout=10)) as c:
                    c.pull_image(ref)
                    results[name] = {call: timed_calls(c, fn, args.n) for call, fn in calls.items()}
            print(f"unary calls, {args.n} each after 50 warm-up, one channel (µs):")
            print(f"{'call':<12} {'containerd p50':>15} {'p99':>8} {'k8sx p50':>10} {'p99':>8} {'ratio p50':>10}")
            for call in calls:
                a, b = results["containerd"][call], results["k8sx"][call]
                print(f"{call:<12} {pct(a, .5):>15.0f} {pct(a, .99):>8.0f} {pct(b, .5):>10.0f} {pct(b, .99):>8.0f} "
                      f"{pct(b, .5) / pct(a, .5):>9.2f}x")
            crictl = shutil.which("crictl")
            print(f"\nCLI wall time, median of {args.cli_runs} whole processes (ms):")
            for verb in ("version", "images"):
                mine = wall([K8SX, "runtime", "-r", ours.endpoint, verb], args.cli_runs)
                if crictl:
                    ref_ms = wall([crictl, "-r", ours.endpoint, "-i", ours.endpoint, verb], args.cli_runs)
                    print(f"{verb:<10} crictl {ref_ms:7.1f}   k8sx runtime {mine:7.1f}   ratio {mine / ref_ms:.2f}x")
                else:
                    print(f"{verb:<10} k8sx runtime {mine:7.1f}   (crictl not installed: no reference)")
    finally:
        reg.stop()
        shutil.rmtree(d1, ignore_errors=True)
        shutil.rmtree(d2, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
