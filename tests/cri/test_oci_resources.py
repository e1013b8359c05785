"""cgroup resources of real containers: limits land in the cgroup v1 files, runc update changes them,
stats come back, the OOM killer is reported as OOMKilled, oom_score_adj is clamped; and a container
from an image of the image store (Entrypoint/Cmd/Env/WorkingDir/User) runs as kubelet expects."""

from __future__ import annotations

import os

from ocitools import OciEnv

from k8sx.cri.images import build
from k8sx.cri.images.store import ImageStore
from k8sx.cri.oci import Resources, cgroups
from k8sx.cri.oci.spec import restrict_oom_score_adj

MiB = 1 << 20


def _cg(oci: OciEnv, controller: str, cid: str, name: str) -> str:
    path = oci.rt.config(cid)["linux"]["cgroupsPath"]
    with open(os.path.join(cgroups.hierarchies()[controller], path.lstrip("/"), name)) as f:
        return f.read().strip()


def test_resources_land_in_the_cgroup_and_update(oci: OciEnv) -> None:
    res = Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0",
                    memory_limit_in_bytes=64 * MiB, oom_score_adj=500)
    cid = oci.start(["sleep", "1000"], resources=res)
    assert _cg(oci, "cpu", cid, "cpu.shares") == "512"
    assert _cg(oci, "cpu", cid, "cpu.cfs_quota_us") == "50000"
    assert _cg(oci, "cpu", cid, "cpu.cfs_period_us") == "100000"
    assert _cg(oci, "cpuset", cid, "cpuset.cpus") == "0"
    assert _cg(oci, "memory", cid, "memory.limit_in_bytes") == str(64 * MiB)
    pid = oci.rt.state(cid).pid
    with open(f"/proc/{pid}/oom_score_adj") as f:
        assert f.read().strip() == "500"
    with open(f"/proc/{pid}/cgroup") as f:
        assert oci.rt.config(cid)["linux"]["cgroupsPath"] in f.read()

    oci.rt.update(cid, Resources(cpu_shares=256, memory_limit_in_bytes=128 * MiB))
    assert _cg(oci, "cpu", cid, "cpu.shares") == "256"
    assert _cg(oci, "memory", cid, "memory.limit_in_bytes") == str(128 * MiB)
    assert _cg(oci, "cpu", cid, "cpu.cfs_quota_us") == "50000"     # untouched
    assert oci.rt.config(cid)["linux"]["resources"]["memory"]["limit"] == 128 * MiB


def test_negative_oom_score_adj_is_clamped(oci: OciEnv) -> None:
    with open("/proc/self/oom_score_adj") as f:
        ours = int(f.read())
    assert restrict_oom_score_adj(-998) == max(-998, ours)
    assert restrict_oom_score_adj(5000) == 1000
    cid = oci.start(["sleep", "1000"], resources=Resources(oom_score_adj=-998))   # kubelet's value for guaranteed pods
    with open(f"/proc/{oci.rt.state(cid).pid}/oom_score_adj") as f:
        assert int(f.read()) == max(-998, ours)


def test_stats_cpu_memory_and_writable_layer(oci: OciEnv) -> None:
    cid = oci.start(["sh", "-c", "dd if=/dev/zero of=/big bs=1024 count=300 2>/dev/null; "
                                 "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done; sleep 1000"])
    oci.wait_log(cid, "done")
    s = oci.rt.stats(cid)
    assert s.cpu_usage_ns > 10_000_000          # the busy loop took well over 10 ms of CPU
    assert s.memory_usage_bytes > 0 and 0 < s.memory_working_set_bytes <= s.memory_usage_bytes
    assert s.writable_bytes >= 300 * 1024 and s.writable_inodes >= 1
    assert s.timestamp > 0


def test_oom_killed(oci: OciEnv) -> None:
    # dd's 64 MiB buffer does not fit in 16 MiB (swap is held to the same limit).
    st, _ = oci.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                    resources=Resources(memory_limit_in_bytes=16 * MiB))
    assert (st.exit_code, st.reason) == (137, "OOMKilled")


def test_container_from_an_image_store_image(oci: OciEnv, image_store: ImageStore) -> None:
    """Layers and config as the servicer gets them from the image store; kubelet's argv rules."""
    root = os.path.join(oci.dir, "img")
    build.busybox_rootfs(root)
    with open(os.path.join(root, "etc", "passwd"), "a") as f:
        f.write("app:x:1500:1500::/home/app:/bin/sh\n")
    img = build.image_from_dir(root, {"Entrypoint": ["sh", "-c"], "Cmd": ["echo from-image-cmd"],
                                      "Env": ["PATH=/bin", "FROM_IMAGE=1", "OVERRIDE=image"],
                                      "WorkingDir": "/work/dir", "User": "app"})
    layout = os.path.join(oci.dir, "layout")
    build.write_oci_layout(layout, [(img, "k8sxto/app:1")])
    image = image_store.import_archive(layout)[0]
    layers = image_store.layers(image.id)
    cfg = image.config.get("config", {})

    def run(**kw: object) -> str:
        inp = oci.spec(kw.pop("command", []), image_layers=layers, image_config=cfg, **kw)  # type: ignore[arg-type]
        oci.rt.create(inp)
        oci.rt.start(inp.id)
        assert oci.wait_exit(inp.id).exit_code == 0
        return oci.output(inp.id)

    assert run() == "from-image-cmd"                                  # Entrypoint + Cmd
    assert run(args=["echo $FROM_IMAGE $OVERRIDE $(pwd) $(id -u)"],   # args replace Cmd only
               envs=[("OVERRIDE", "cri")]) == "1 cri /work/dir 1500"
    assert run(command=["echo"], args=["a", "b"]) == "a b"            # command replaces Entrypoint, drops Cmd
    assert run(command=["pwd"], working_dir="/tmp") == "/tmp"
