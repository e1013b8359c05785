"""Benchmark: the OCI layer's create+start (overlay rootfs, config.json, conmon + runc create, runc
start) against bare ``runc create`` + ``runc start`` of a ready bundle, interleaved in one run.

Why: issue 5 wants create+start through the CRI server <= 0.8x containerd's (~107 ms measured here).
The bare runc pair is the floor any runc-based runtime pays; the ratio shows what our layer (spec
building, the overlay mount, conmon's supervision) adds, and the absolute median what is left for
the gRPC servicer. Each container runs ``sleep 1000`` and is deleted (not timed) before the next.

Everything lives in a ``k8sxtob-*`` temp dir and a ``/k8sxtob-*`` cgroup, removed at the end.
Run as root: ``.venv/bin/python bench/oci_create_start.py [-n 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid

from k8sx.cri.images import build
from k8sx.cri.oci import ContainerSpecInput, cgroups
from k8sx.cri.oci.runtime import OciRuntime

TAG = "k8sxtob"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    ns = ap.parse_args()
    top = tempfile.mkdtemp(prefix=f"{TAG}-")
    parent = f"/{TAG}-{uuid.uuid4().hex[:8]}"
    rt = OciRuntime(os.path.join(top, "state"), os.path.join(top, "root"))
    layer = os.path.join(top, "layer")
    build.busybox_rootfs(layer)
    ours: list[float] = []
    bare: list[float] = []
    try:
        # The bare bundle: a copy of our own config.json (same spec), on a plain rootfs dir.
        probe = ContainerSpecInput(id=f"{TAG}-probe", image_layers=[layer], log_path=os.path.join(top, "p.log"),
                                   command=["sleep", "1000"], cgroup_parent=parent)
        rt.create(probe)
        cfg = rt.config(probe.id)
        rt.delete(probe.id)
        bundle = os.path.join(top, "bare")
        os.makedirs(bundle)
        cfg["root"]["path"] = layer
        runc_root = os.path.join(top, "runc-bare")
        for i in range(ns.n):
            cid = f"{TAG}-{i}"
            t = time.perf_counter()
            rt.create(ContainerSpecInput(id=cid, image_layers=[layer], log_path=os.path.join(top, f"{cid}.log"),
                                         command=["sleep", "1000"], cgroup_parent=parent))
            rt.start(cid)
            ours.append(time.perf_counter() - t)
            rt.delete(cid)

            bid = f"{TAG}-bare-{i}"
            cfg["linux"]["cgroupsPath"] = f"{parent}/{bid}"
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(cfg, f)
            t = time.perf_counter()
            subprocess.run(["runc", "--root", runc_root, "create", "--bundle", bundle, bid], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(["runc", "--root", runc_root, "start", bid], check=True)
            bare.append(time.perf_counter() - t)
            subprocess.run(["runc", "--root", runc_root, "delete", "--force", bid], check=True)
    finally:
        for cid in rt.list():
            rt.delete(cid)
        cgroups.remove(parent)
        shutil.rmtree(top, ignore_errors=True)
    mo, mb = statistics.median(ours), statistics.median(bare)
    print(f"create+start, median of {ns.n}:")
    print(f"  k8sx OCI layer (overlay + spec + conmon + runc): {mo * 1000:7.1f} ms")
    print(f"  bare runc create + start (same config.json):     {mb * 1000:7.1f} ms")
    print(f"  ratio k8sx / bare runc: {mo / mb:.2f}x   (containerd CRI create+start here: ~107 ms -> "
          f"{mo * 1000 / 107:.2f}x of that)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
