"""What a pod owns besides its namespaces: its cgroup and its /dev/shm, made with it and gone with it.

Proves: RunPodSandbox makes ``<cgroup_parent>/k8sx-pod-<id>`` in every v1 hierarchy, the pod's
containers run in cgroups beneath it (the init of its shared PID namespace in it), statsp reports
that cgroup's figures (a process put straight into it, in no container, shows in them), a
kubelet-style ``linux.cgroup_parent`` is used as the pod's cgroup and left in place on removal
(kubelet owns it); the containers of a pod share one 64 MiB tmpfs as /dev/shm that another pod does
not see, a host-IPC pod gets the node's /dev/shm; and after rmp nothing is left (cgroup, mount, files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from runtimetools import RuntimeNode
from support import unique

SLEEP = ["sleep", "3600"]
CG = "/sys/fs/cgroup"


def _cgroup_of(n: RuntimeNode, ctr: str, controller: str) -> str:
    """The container's cgroup in ``controller``'s hierarchy, as a process exec'd into it sees it (no cgroupns
    on v1; an exec joins the container's cgroups)."""
    for line in n.cli("exec", "-s", ctr, "cat", "/proc/self/cgroup").stdout.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"no {controller} cgroup for {ctr}")


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def test_pod_cgroup_holds_its_containers_and_gives_its_stats(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod, c = n.run_pod("k8sxte-cg", {"a": SLEEP, "b": SLEEP})
    cg = f"{n.cgroup_parent}/k8sx-pod-{pod}"
    burner = None
    try:
        for controller in ("memory", "cpu", "cpuacct", "pids", "cpuset"):
            assert os.path.isdir(f"{CG}/{controller}{cg}"), controller
        for ctr in c.values():
            for controller in ("memory", "cpuacct"):
                assert os.path.dirname(_cgroup_of(n, ctr, controller)) == cg
        # the init of the pod's shared PID namespace runs in it too, as pause does
        with open(f"{CG}/memory{cg}/cgroup.procs") as f:
            pids = f.read().split()
        assert len(pids) == 1 and n.inspectp(pod)["info"]["pid"] != 0

        # a process in the pod's cgroup but in no container: 0.3 s of cpu and 48 MiB
        burner = subprocess.Popen(
            [sys.executable, "-c",
             "import sys,time\n"
             "for d in sys.argv[1:]: open(d + '/cgroup.procs', 'w').write('0')\n"
             "b = bytearray(48 << 20)\nb[::4096] = b'x' * len(b[::4096])\n"
             "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
             "print('ready', flush=True)\ntime.sleep(600)\n",
             f"{CG}/memory{cg}", f"{CG}/cpuacct{cg}"], stdout=subprocess.PIPE, text=True)
        assert burner.stdout is not None and burner.stdout.readline() == "ready\n"
        cpu_before = _read_int(f"{CG}/cpuacct{cg}/cpuacct.usage")
        pod_stats = json.loads(n.cli("statsp", "-o", "json", "--id", pod).stdout)["stats"][0]["linux"]
        cpu_after = _read_int(f"{CG}/cpuacct{cg}/cpuacct.usage")
        cpu = int(pod_stats["cpu"]["usageCoreNanoSeconds"]["value"])
        assert cpu_before <= cpu <= cpu_after and cpu >= 300_000_000
        assert int(pod_stats["memory"]["usageBytes"]["value"]) >= 48 << 20
        ctr_stats = json.loads(n.cli("stats", "-o", "json", "--pod", pod).stdout)["stats"]
        assert len(ctr_stats) == 2
        assert sum(int(s["memory"]["usageBytes"]["value"]) for s in ctr_stats) < 48 << 20
    finally:
        if burner is not None:
            burner.kill()
            burner.wait(10)
    n.cli("rmp", "-f", pod)
    assert not any(os.path.exists(f"{CG}/{controller}{cg}") for controller in os.listdir(CG))
    assert n.leaks([pod], []) == []


def test_kubelets_cgroup_parent_is_the_pods_and_stays(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    kube = f"{n.cgroup_parent}/{unique('e', 20)}"
    made = []
    try:
        for controller in ("memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "freezer", "blkio",
                           "systemd", "unified"):
            parent, d = f"{CG}/{controller}{n.cgroup_parent}", f"{CG}/{controller}{kube}"
            os.makedirs(parent, exist_ok=True)
            os.mkdir(d)
            made.append(d)
            if controller == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(f"{CG}/cpuset/{name}") as src, open(f"{parent}/{name}", "w") as p:
                        p.write(src.read())
                    with open(f"{parent}/{name}") as src, open(f"{d}/{name}", "w") as dst:
                        dst.write(src.read())
        pod, c = n.run_pod("k8sxte-kube", {"a": SLEEP}, linux={"cgroup_parent": kube})
        assert os.path.dirname(_cgroup_of(n, c["a"], "memory")) == kube
        assert not os.path.exists(f"{CG}/memory{n.cgroup_parent}/k8sx-pod-{pod}")
        n.cli("rmp", "-f", pod)
        left = f"{CG}/memory{kube}"  # still there (kubelet's), and empty
        assert os.path.isdir(left) and [e for e in os.listdir(left) if os.path.isdir(os.path.join(left, e))] == []
    finally:
        for d in made[::-1]:
            os.rmdir(d)
    assert n.leaks([pod], []) == []


def test_a_relative_cgroup_parent_is_refused(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    r = n.cli("runp", n.pod_config("k8sxte-slice", linux={"cgroup_parent": "kubepods.slice"}), check=False)
    assert r.returncode != 0 and "cgroupfs" in r.stderr
    assert n.cli("pods", "--name", "k8sxte-slice", "-q").stdout.split() == []


def test_containers_of_a_pod_share_its_dev_shm(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod_a, a = n.run_pod("k8sxte-shm-a", {"writer": ["sh", "-c", "echo hello > /dev/shm/x; exec sleep 3600"],
                                          "reader": SLEEP})
    pod_b, b = n.run_pod("k8sxte-shm-b", {"other": SLEEP})
    assert n.wait_exec(a["reader"], "cat", "/dev/shm/x").strip() == "hello"
    assert n.cli("exec", "-s", b["other"], "ls", "-A", "/dev/shm").stdout == ""
    df = n.cli("exec", "-s", a["reader"], "df", "-k", "/dev/shm").stdout.splitlines()[-1].split()
    assert int(df[1]) == 64 * 1024  # 1K-blocks: containerd's 64 MiB
    shm = os.path.join(n.state, "pods", pod_a, "shm")
    with open(os.path.join(shm, "x")) as f:
        assert f.read() == "hello\n"  # the pod's tmpfs, on the node
    for pod in (pod_a, pod_b):
        n.cli("stopp", pod)
        n.cli("rmp", pod)
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if f"/pods/{pod_a}/" in line or f"/pods/{pod_b}/" in line]
    assert n.leaks([pod_a, pod_b], []) == []


def test_a_host_ipc_pod_gets_the_nodes_dev_shm(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    name = unique("e", 20)
    with open(f"/dev/shm/{name}", "w") as f:
        f.write("node\n")
    try:
        pod, c = n.run_pod("k8sxte-hostipc", {"a": SLEEP}, linux={"security_context": {
            "namespace_options": {"ipc": 2}}})
        assert n.cli("exec", "-s", c["a"], "cat", f"/dev/shm/{name}").stdout == "node\n"
        assert not os.path.exists(os.path.join(n.state, "pods", pod, "shm"))
        n.cli("rmp", "-f", pod)
        assert os.path.exists(f"/dev/shm/{name}")  # the node's /dev/shm is not unmounted or emptied
    finally:
        os.unlink(f"/dev/shm/{name}")
    assert n.leaks([pod], []) == []
