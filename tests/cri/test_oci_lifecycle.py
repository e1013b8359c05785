"""Containers under real conmon + runc: exit codes, CRI logs, stop/kill semantics, exec, restart
of our process, and delete leaving nothing behind (checked by the ``oci`` fixture's teardown)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from ocitools import OciEnv
from support import have

from k8sx.cri.oci import ContainerStateError, Namespaces, Seccomp, Security
from k8sx.cri.oci.runtime import OciRuntime
from k8sx.errors import K8sxError

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$")


def test_exit_code_reason_times_and_cri_log(oci: OciEnv) -> None:
    before = time.time_ns()
    st, log = oci.run(["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"])
    assert (st.status, st.exit_code, st.reason) == ("exited", 3, "Error")
    assert before <= st.created_at <= st.started_at <= st.finished_at <= time.time_ns()
    entries = [LOG_LINE.match(line) for line in log.splitlines()]
    assert all(entries), log
    got = [(m.group(2), m.group(3), m.group(4)) for m in entries if m]
    assert ("stdout", "F", "out") in got and ("stderr", "F", "err") in got
    assert ("stdout", "P", "partial") in got      # a last line without newline is a partial one

    st, _ = oci.run(["true"])
    assert (st.exit_code, st.reason) == (0, "Completed")


def test_stop_sigterm_then_sigkill_137(oci: OciEnv) -> None:
    # The image's StopSignal replaces SIGTERM.
    cid = oci.start(["sh", "-c", "trap 'exit 21' USR1; echo ready; while true; do sleep 0.1; done"],
                    image_config={"StopSignal": "SIGUSR1"})
    oci.wait_log(cid, "ready")
    assert oci.rt.stop(cid, timeout=10).exit_code == 21
    # A shell that handles TERM exits with its own code, well before the timeout.
    cid = oci.start(["sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done"])
    oci.wait_log(cid, "ready")
    t = time.monotonic()
    st = oci.rt.stop(cid, timeout=10)
    assert (st.status, st.exit_code) == ("exited", 42) and time.monotonic() - t < 5

    # PID 1 without a handler ignores SIGTERM: SIGKILL after the timeout, reported as 128+9.
    cid = oci.start(["sleep", "1000"])
    t = time.monotonic()
    st = oci.rt.stop(cid, timeout=1)
    took = time.monotonic() - t
    assert (st.status, st.exit_code, st.reason) == ("exited", 137, "Error")
    assert 1 <= took < 5, took
    assert oci.rt.stop(cid, timeout=1).exit_code == 137   # stopping an exited container is a no-op


def test_kill_signal_and_stop_of_created_container(oci: OciEnv) -> None:
    cid = oci.start(["sleep", "1000"])
    oci.rt.kill(cid, "SIGKILL")
    assert oci.wait_exit(cid).exit_code == 137
    inp = oci.spec(["sleep", "1000"])
    assert oci.rt.create(inp).status == "created"
    st = oci.rt.stop(inp.id, timeout=5)
    assert st.status == "exited" and st.started_at == 0
    with pytest.raises(ContainerStateError):
        oci.rt.start(inp.id)


def test_exec_sync_output_exit_code_and_timeout(oci: OciEnv) -> None:
    cid = oci.start(["sleep", "1000"], envs=[("GREETING", "hello")])
    r = oci.rt.exec_sync(cid, ["sh", "-c", "echo $GREETING; echo oops >&2; exit 5"], timeout=10)
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out) == (b"hello\n", b"oops\n", 5, False)
    t = time.monotonic()
    r = oci.rt.exec_sync(cid, ["sh", "-c", "echo started; sleep 30; echo never"], timeout=1)
    assert r.timed_out and r.exit_code == 137 and time.monotonic() - t < 4
    assert r.stdout == b"started\n"
    # The timed-out process and its child are gone from the container.
    ps = oci.rt.exec_sync(cid, ["ps", "-o", "args"], timeout=10).stdout.decode()
    assert "sleep 30" not in ps, ps
    oci.rt.stop(cid, 0)
    with pytest.raises(ContainerStateError):
        oci.rt.exec_sync(cid, ["true"], timeout=5)


def test_network_namespace_is_the_given_one(oci: OciEnv) -> None:
    cid = oci.start(["sleep", "1000"])
    r = oci.rt.exec_sync(cid, ["sh", "-c", "ip -o link; readlink /proc/self/ns/net"], timeout=10)
    out = r.stdout.decode()
    assert f"net:[{os.stat(oci.netns).st_ino}]" in out
    links = [line for line in out.splitlines() if re.match(r"^\d+: ", line)]
    assert len(links) == 1 and ": lo:" in links[0], out


def test_survives_our_process_and_state_is_recovered(oci: OciEnv) -> None:
    """A separate Python process creates and starts the container, then dies by SIGKILL; a new
    OciRuntime on the same dirs sees it running, conmon keeps logging, and stop/exit code work."""
    inp = oci.spec(["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"])
    short = oci.spec(["sh", "-c", "sleep 0.5; exit 6"])       # ends while nobody of ours is running
    script = textwrap.dedent(f"""
        import os, signal
        from k8sx.cri.oci import ContainerSpecInput, Namespaces
        from k8sx.cri.oci.runtime import OciRuntime
        rt = OciRuntime({oci.state!r}, {os.path.join(oci.dir, "root")!r})
        for cid, cmd in (({inp.id!r}, {inp.command!r}), ({short.id!r}, {short.command!r})):
            rt.create(ContainerSpecInput(id=cid, image_layers={inp.image_layers!r},
                                         log_path=os.path.join({oci.logs!r}, cid + ".log"), command=cmd,
                                         cgroup_parent={inp.cgroup_parent!r},
                                         namespaces=Namespaces(network={oci.netns!r})))
            rt.start(cid)
        print(rt.state({inp.id!r}).pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    pid = int(r.stdout.strip())
    oci.wait_log(inp.id, "tick 3")
    st = oci.rt.state(inp.id)
    assert (st.status, st.pid) == ("running", pid) and st.started_at > 0
    n = oci.log(inp.id).count("tick")
    oci.wait_log(inp.id, f"tick {n + 3}")     # conmon, not us, still forwards the output
    assert sorted(oci.rt.list()) == sorted([inp.id, short.id])
    done = oci.wait_exit(short.id)
    assert (done.exit_code, done.reason) == (6, "Error")
    assert done.started_at + 400_000_000 < done.finished_at < time.time_ns()
    st = oci.rt.stop(inp.id, timeout=0.5)
    assert st.exit_code == 137
    assert not os.path.exists(f"/proc/{pid}")


def test_create_failure_leaves_nothing(oci: OciEnv) -> None:
    inp = oci.spec(["/no/such/binary"])
    with pytest.raises(K8sxError, match="no such file|not found|executable"):
        oci.rt.create(inp)
    assert oci.rt.list() == []
    with pytest.raises(K8sxError, match="already exists"):
        first = oci.spec(["sleep", "1"])
        oci.rt.create(first)
        oci.rt.create(oci.spec(["sleep", "1"], id=first.id))
    with pytest.raises(K8sxError, match="not found in the image"):
        oci.rt.create(oci.spec(["id"], security=Security(run_as_username="mallory")))
    with pytest.raises(K8sxError, match="does not exist"):
        oci.rt.create(oci.spec(["id"], namespaces=Namespaces(network="/var/run/netns/k8sxto-none")))
    assert oci.rt.list() == [first.id]


def test_delete_running_container_leaks_nothing(oci: OciEnv) -> None:
    cid = oci.start(["sh", "-c", "sleep 1000 & sleep 1000"])
    st = oci.rt.state(cid)
    conmon_pid = oci.rt._conmon_pid(cid)
    rootfs = st.rootfs
    assert os.path.ismount(rootfs) and os.path.exists(f"/proc/{conmon_pid}")
    children = oci.rt.exec_sync(cid, ["ps", "-o", "pid"], timeout=5).stdout.split()
    assert len(children) >= 3
    oci.rt.delete(cid)
    assert not os.path.exists(rootfs) and not os.path.exists(f"/proc/{st.pid}")
    with pytest.raises(K8sxError, match="not found"):
        oci.rt.state(cid)
    # (the fixture's teardown checks mounts, cgroups, processes and files)


def test_reopen_log(oci: OciEnv) -> None:
    cid = oci.start(["sh", "-c", "while true; do echo tick; sleep 0.05; done"])
    log = os.path.join(oci.logs, f"{cid}.log")
    oci.wait_log(cid, "tick")
    os.rename(log, log + ".1")
    oci.rt.reopen_log(cid)
    oci.wait_log(cid, "tick")
    assert os.path.getsize(log + ".1") > 0



# crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not supported"); on such a host it runs
# in a mount namespace without the cgroup2 mount (cri-spike.md §3). On a pure v1 or v2 host: crun itself.
CRUN_HYBRID = """#!/bin/sh
exec unshare -m --propagation private sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
"""


def test_crun_as_runtime_path(oci_layers: list[str], netns: object) -> None:
    assert have("crun"), "crun missing: apt-get install crun"
    env = OciEnv(oci_layers, netns.path(netns("o")), runtime_path="runc")  # type: ignore[attr-defined]
    try:
        crun = "crun"
        if os.path.isdir("/sys/fs/cgroup/unified") and os.path.isdir("/sys/fs/cgroup/memory"):
            crun = os.path.join(env.dir, "crun-hybrid")
            with open(crun, "w") as f:
                f.write(CRUN_HYBRID)
            os.chmod(crun, 0o755)
        env.rt = OciRuntime(env.state, os.path.join(env.dir, "root"), runtime_path=crun)
        st, log = env.run(["sh", "-c", "grep ^Seccomp: /proc/self/status; exit 4"],
                          security=Security(seccomp=Seccomp("RuntimeDefault")))
        assert (st.exit_code, env.output(st.id)) == (4, "Seccomp:\t2")
        cid = env.start(["sleep", "1000"])
        r = env.rt.exec_sync(cid, ["sh", "-c", "echo in-crun; exit 3"], timeout=10)
        assert (r.stdout, r.exit_code) == (b"in-crun\n", 3)
        assert env.rt.stop(cid, timeout=0.5).exit_code == 137
        with open(os.path.join(env.state, "bundles", cid, "meta.json")) as f:
            assert crun in f.read()
    finally:
        env.teardown()


def test_pinned_namespaces_hostname_sysctls_and_pod_pid(oci: OciEnv) -> None:
    """uts and ipc namespaces pinned by the caller (as the sandbox pins them), the pod's hostname,
    namespaced sysctls, and a second container in the first one's pid namespace."""
    nsdir = os.path.join(oci.dir, "ns")
    os.makedirs(nsdir)
    uts, ipc = os.path.join(nsdir, "uts"), os.path.join(nsdir, "ipc")
    subprocess.run(["mount", "--bind", nsdir, nsdir], check=True)
    try:
        subprocess.run(["mount", "--make-private", nsdir], check=True)
        for f in (uts, ipc):
            open(f, "w").close()
        subprocess.run(["unshare", f"--uts={uts}", f"--ipc={ipc}", "true"], check=True)
        ns = Namespaces(network=oci.netns, uts=uts, ipc=ipc)
        a = oci.start(["sleep", "1000"], namespaces=ns, hostname="k8sxto-pod",
                      sysctls={"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"})
        r = oci.rt.exec_sync(a, ["sh", "-c", "hostname; echo $HOSTNAME; cat /proc/sys/net/ipv4/ip_forward "
                                             "/proc/sys/kernel/shm_rmid_forced; readlink /proc/self/ns/ipc"], 10)
        assert r.stdout.decode().split() == ["k8sxto-pod", "k8sxto-pod", "1", "1", f"ipc:[{os.stat(ipc).st_ino}]"]
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            host_forward = f.read().strip()
        b = oci.start(["sleep", "999"], namespaces=Namespaces(
            network=oci.netns, uts=uts, ipc=ipc, pid="pod", pid_path=f"/proc/{oci.rt.state(a).pid}/ns/pid"))
        ps = oci.rt.exec_sync(b, ["ps", "-o", "pid,args"], 10).stdout.decode()
        assert "sleep 1000" in ps and "sleep 999" in ps, ps
        assert ps.split("\n")[1].split()[0] == "1"                 # a's sleep is pid 1 of the shared pid ns
        oci.rt.delete(b)
        oci.rt.delete(a)
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            assert f.read().strip() == host_forward                  # the sysctl stayed in the pod's netns
    finally:
        for f in (uts, ipc):
            subprocess.run(["umount", f], check=False, stderr=subprocess.DEVNULL)
        subprocess.run(["umount", nsdir], check=False)


def test_orphaned_rootfs_dirs_are_pruned(oci: OciEnv) -> None:
    """After a reboot the state dir (tmpfs) is empty but the root dir still has upper/work dirs."""
    cid = oci.start(["sleep", "1000"])
    rootfs = oci.rt.state(cid).rootfs
    oci.rt.stop(cid, 0)
    stale = os.path.join(oci.dir, "root", "containers", "k8sxto-stale")
    os.makedirs(os.path.join(stale, "upper", "etc"))
    assert OciRuntime(oci.state, os.path.join(oci.dir, "root")).prune() == []   # (the constructor pruned it)
    assert not os.path.exists(stale)
    assert os.path.ismount(rootfs)                                              # a live container's is kept
