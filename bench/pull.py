"""Benchmark: pull + unpack of a multi-layer image from a local registry, k8sx's store vs containerd.

Both pull the same image from the same loopback ``docker-registry`` (started here, as the tests do).
containerd is a private instance (own root, state and socket under a ``k8sxti-bench-*`` temp dir,
CRI plugin, overlayfs snapshotter, ``certs.d`` pointing at the registry) driven by ``crictl pull``.
Each round pulls a new image (every layer different, all pushed before the first round), so neither
side reuses content or snapshots, and the two take turns going first. Nothing is removed until the
last round: on this host's journal-less ext4, files created within minutes of a big removal in the
same inode group cost several times the kernel time (see :mod:`k8sx.cri.images.snapshots`), and
whichever side's files landed there paid for the other's ``rmi`` (rounds of 1.1-2.1 s on either side).
k8sx pulls into a fresh ``ImageStore`` in process (what ``k8sx runtime serve`` does for PullImage);
crictl's own start-up (~20 ms) is inside containerd's figure. CPU seconds are printed too: the host
is shared, and wall time follows everyone else's load.

    .venv/bin/python bench/pull.py [--rounds 5] [--spread-containerd]

k8sx's snapshots directory carries ext4's ``T`` attribute against that trap; ``--spread-containerd``
gives containerd's overlayfs snapshots directory the same attribute (both sides then place their
snapshots alike); without it containerd runs as Debian ships it.

Prints the medians and the ratio k8sx/containerd (target <= 1.0x).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "cri"))

from imagetools import Containerd, Registry

from k8sx.cri.images import build
from k8sx.cri.images.snapshots import spread_subdirs
from k8sx.cri.images.store import ImageStore


def small_files_layer(n: int, size: int, seed: int) -> bytes:
    buf = io.BytesIO()
    rnd = __import__("random").Random(seed)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(n // 100):
            ti = tarfile.TarInfo(f"usr/share/k8sxti/d{seed}-{d}")
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
            for i in range(100):
                data = rnd.randbytes(size // 2) + b"a" * (size // 2)
                ti = tarfile.TarInfo(f"usr/share/k8sxti/d{seed}-{d}/f{i}")
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def big_file_layer(mb: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = os.urandom(mb << 19) + bytes(mb << 19)  # half random, half zeros
        ti = tarfile.TarInfo("opt/k8sxti/blob.bin")
        ti.size, ti.mode = len(data), 0o644
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_image(work: str, seed: int) -> build.BuiltImage:
    """A fresh image per round (every layer differs), so neither side can reuse anything from before."""
    rootfs = os.path.join(work, f"rootfs-{seed}")
    build.busybox_rootfs(rootfs)
    with open(os.path.join(rootfs, "etc", "round"), "w") as f:
        f.write(f"{seed}\n")
    layers = [build.tar_dir(rootfs), small_files_layer(2000, 2048, 10 * seed + 1),
              small_files_layer(1000, 8192, 10 * seed + 2), big_file_layer(24), big_file_layer(8)]
    shutil.rmtree(rootfs)
    return build.make_image(layers, {"Cmd": ["sh"]})


def self_cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def children_cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # crictl, once it was waited for
    return r.ru_utime, r.ru_stime


def containerd_cpu(c: Containerd) -> tuple[float, float]:
    """containerd's user and system CPU seconds so far (the CRI plugin pulls inside the daemon)."""
    with open(f"/proc/{c.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    ch = children_cpu()
    return int(fields[11]) / hz + ch[0], int(fields[12]) / hz + ch[1]


def delta(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return b[0] - a[0], b[1] - a[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--spread-containerd", action="store_true",
                    help="chattr +T containerd's snapshots directory too (equal inode placement)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="k8sxti-bench-")
    registry = containerd = None
    try:
        registry = Registry("bench")
        containerd = Containerd(work, registry.host)
        if args.spread_containerd:
            snaps = os.path.join(containerd.dir, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots")
            print(f"containerd snapshots directory spread (chattr +T): {spread_subdirs(snaps)}")
        ours, theirs, cpu_ours, cpu_theirs = [], [], [], []
        images = [make_image(work, i) for i in range(args.rounds)]
        refs = [registry.push(registry.repo("bench") + f":{i}", img) for i, img in enumerate(images)]
        total = sum(b.size for b in images[0].layers)
        print(f"image: {len(images[0].layers)} layers, {total / 1e6:.1f} MB compressed, a new one each round")
        for i, (img, ref) in enumerate(zip(images, refs, strict=True)):

            def theirs_pull(ref: str = ref) -> None:
                c0, t0 = containerd_cpu(containerd), time.perf_counter()
                containerd.crictl("pull", ref)
                theirs.append(time.perf_counter() - t0)
                cpu_theirs.append(delta(c0, containerd_cpu(containerd)))

            def ours_pull(ref: str = ref, i: int = i, want: str = img.id) -> None:
                c0, t0 = self_cpu(), time.perf_counter()
                got = ImageStore(os.path.join(work, f"k8sx-{i}")).pull(ref)
                ours.append(time.perf_counter() - t0)
                cpu_ours.append(delta(c0, self_cpu()))
                assert got.id == want

            for run in (theirs_pull, ours_pull) if i % 2 == 0 else (ours_pull, theirs_pull):
                run()
        for ref in refs:
            containerd.crictl("rmi", ref)
        k, c = statistics.median(ours), statistics.median(theirs)
        print(f"k8sx ImageStore.pull : median {k * 1000:7.1f} ms  ({', '.join(f'{x * 1000:.0f}' for x in ours)})")
        print(f"containerd crictl pull: median {c * 1000:7.1f} ms  ({', '.join(f'{x * 1000:.0f}' for x in theirs)})")
        print(f"ratio k8sx/containerd: {k / c:.2f}x (target <= 1.0x)")
        for who, cpu in (("k8sx", cpu_ours), ("containerd+crictl", cpu_theirs)):
            print(f"CPU seconds, median: {who:18s} user {statistics.median(u for u, _ in cpu):.2f}  "
                  f"sys {statistics.median(s for _, s in cpu):.2f}")
        print(f"load average now {os.getloadavg()[0]:.1f} (sys time, i.e. file creation, follows the host's load)")
    finally:
        if containerd:
            containerd.stop()
        if registry:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
