"""Pods and containers end to end through ``k8sx runtime`` verbs against a real ``k8sx runtime serve``.

The server runs in a node network namespace of its own with the reference CNI plugins; pods get
their own network namespaces on the node's bridge; containers are busybox under conmon + runc.
Proves: two containers of a pod talk over localhost and pods talk across the bridge, hostname, DNS,
sysctls, port mappings and the shared PID namespace are applied, ps/logs/exec/inspect print what
happened, a stop escalates to SIGKILL, stop/remove leave nothing behind (mounts, namespace files,
addresses, iptables rules, veths, cgroups, processes), and a ``kill -9`` of the server loses nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from runtimetools import RuntimeNode
from support import bin_path

WEB = ["sh", "-c", "echo started web; echo oops >&2; exec httpd -f -p 8080 -h /etc"]
SLEEP = ["sleep", "3600"]


def test_two_pods_reach_each_other_and_the_verbs_show_it(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod_a, a = n.run_pod("k8sxts-a", {"web": WEB, "client": SLEEP},
                         dns_config={"servers": ["10.197.0.10"], "searches": ["k8sxts.svc"],
                                     "options": ["ndots:5"]})
    pod_b, b = n.run_pod("k8sxts-b", {"client": SLEEP})
    ip_a = n.inspectp(pod_a)["status"]["network"]["ip"]
    ip_b = n.inspectp(pod_b)["status"]["network"]["ip"]
    assert ipaddress.ip_address(ip_a) in ipaddress.ip_network(f"{n.subnet}.0/24")
    assert ip_a != ip_b

    # localhost inside pod A (two containers share the pod's network namespace)
    assert n.wait_exec(a["client"], "wget", "-qO-", "http://127.0.0.1:8080/hostname").strip() == "k8sxts-a"
    # pod B -> pod A over the bridge
    assert n.wait_exec(b["client"], "wget", "-qO-", f"http://{ip_a}:8080/hostname").strip() == "k8sxts-a"
    # hostname and resolv.conf from the pod config
    assert n.cli("exec", "-s", b["client"], "hostname").stdout.strip() == "k8sxts-b"
    resolv = n.cli("exec", "-s", a["client"], "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines() == ["search k8sxts.svc", "nameserver 10.197.0.10", "options ndots:5"]
    # the pod's PID namespace is shared by default (pid POD): the client sees httpd
    assert "httpd" in n.cli("exec", "-s", a["client"], "ps").stdout

    # exec: exit code and stderr are the command's
    r = n.cli("exec", "-s", a["client"], "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")

    # ps: running containers of pod A, table / -q / -o json / label filter
    table = n.cli("ps", "-p", pod_a).stdout.splitlines()
    assert table[0].split()[:4] == ["CONTAINER", "IMAGE", "CREATED", "STATE"]
    assert sorted(line.split()[0] for line in table[1:]) == sorted(c[:13] for c in a.values())
    assert set(n.cli("ps", "-q", "--no-trunc", "--label", "ctr=client").stdout.split()) == {a["client"], b["client"]}
    listed = json.loads(n.cli("ps", "-o", "json", "--pod", pod_b).stdout)["containers"]
    assert [(c["id"], c["state"]) for c in listed] == [(b["client"], "CONTAINER_RUNNING")]
    pods = n.cli("pods", "--label", "app=k8sxts-a", "-q", "--no-trunc").stdout.split()
    assert pods == [pod_a]

    # logs: stdout and stderr of the web container, --tail
    logs = n.cli("logs", a["web"])
    assert logs.stdout == "started web\n" and logs.stderr == "oops\n"
    assert n.cli("logs", "--tail", "1", a["web"]).stderr == "oops\n"
    st = n.inspect(a["web"])["status"]
    assert st["state"] == "CONTAINER_RUNNING" and st["logPath"].endswith("k8sxts-a/web.log")

    # stats see the running containers
    stats = json.loads(n.cli("stats", "-o", "json", "--pod", pod_a).stdout)["stats"]
    assert {s["attributes"]["id"] for s in stats} == set(a.values())
    assert all(int(s["memory"]["workingSetBytes"]["value"]) > 0 for s in stats)

    for pod in (pod_a, pod_b):
        n.cli("stopp", pod)
        n.cli("rmp", pod)
    assert n.leaks([pod_a, pod_b], [ip_a, ip_b]) == []


def test_sysctls_and_port_mapping(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    host_port = 18000 + n.subnet_octet
    pod, c = n.run_pod("k8sxts-pm", {"web": WEB},
                       port_mappings=[{"protocol": 0, "container_port": 8080, "host_port": host_port}],
                       linux={"sysctls": {"net.ipv4.ip_unprivileged_port_start": "0",
                                          "kernel.shm_rmid_forced": "1"}})
    assert n.cli("exec", "-s", c["web"], "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout == "0\n"
    assert n.cli("exec", "-s", c["web"], "cat", "/proc/sys/kernel/shm_rmid_forced").stdout == "1\n"
    # the node's own value is untouched
    assert n.node("cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout != "0\n"
    # the hostPort answers on the node (portmap's DNAT in the node namespace)
    gateway = f"{n.subnet}.1"
    deadline = time.monotonic() + 15
    while True:
        r = n.node("curl", "-sf", "--max-time", "2", f"http://{gateway}:{host_port}/hostname", check=False)
        if r.returncode == 0:
            break
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)
    assert r.stdout.strip() == "k8sxts-pm"
    ip = n.inspectp(pod)["status"]["network"]["ip"]
    n.cli("rmp", "-f", pod)
    assert f"dpt:{host_port}" not in n.node("iptables", "-t", "nat", "-S").stdout.replace("--dport ", "dpt:")
    assert n.leaks([pod], [ip]) == []


def test_stop_escalates_to_sigkill_and_reports_exit_codes(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod, c = n.run_pod("k8sxts-stop", {
        "stubborn": ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 1; done"],
        "polite": ["sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 1; done"],
        "done": ["sh", "-c", "exit 7"],
    })
    for name in ("stubborn", "polite"):
        deadline = time.monotonic() + 10
        while "ready" not in n.cli("logs", c[name]).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    t0 = time.monotonic()
    n.cli("stop", "-t", "1", c["stubborn"])
    assert 0.9 < time.monotonic() - t0 < 10
    n.cli("stop", "-t", "10", c["polite"])
    st = {name: n.inspect(cid)["status"] for name, cid in c.items()}
    assert (st["stubborn"]["exitCode"], st["stubborn"]["reason"]) == (137, "Error")
    assert st["polite"]["exitCode"] == 42
    assert (st["done"]["state"], st["done"]["exitCode"]) == ("CONTAINER_EXITED", 7)
    assert all(s["finishedAt"] >= s["startedAt"] > s["createdAt"] for s in st.values())
    # stopping an exited container again is fine; starting it again is not
    n.cli("stop", c["done"])
    r = n.cli("start", c["done"], check=False)
    assert r.returncode != 0 and "FailedPrecondition" in r.stderr
    n.cli("rm", c["done"])
    assert c["done"] not in n.cli("ps", "-a", "-q", "--no-trunc").stdout
    n.cli("stopp", pod)
    n.cli("stopp", pod)  # twice: the CNI DEL is repeated and harmless
    pods = json.loads(n.cli("pods", "-o", "json", "--id", pod).stdout)["items"]
    assert [p["state"] for p in pods] == ["SANDBOX_NOTREADY"]
    n.cli("rmp", pod)
    again = n.cli("rmp", pod, check=False)  # as crictl: the status lookup says NotFound
    assert again.returncode == 1 and "code = NotFound" in again.stderr
    assert n.leaks([pod], []) == []


def test_host_network_pod(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod, c = n.run_pod("k8sxts-hn", {"c": SLEEP},
                       linux={"security_context": {"namespace_options": {"network": 2}}})
    status = n.inspectp(pod)["status"]
    assert status["network"]["ip"] == ""
    def names(ip_link: str) -> set[str]:
        return {line.split(":")[1].strip().split("@")[0] for line in ip_link.splitlines()}

    # the node's namespace (its interfaces, and its inode), not a new one
    assert names(n.cli("exec", "-s", c["c"], "ip", "-o", "link").stdout) == names(n.node("ip", "-o", "link").stdout)
    inside = n.cli("exec", "-s", c["c"], "readlink", "/proc/self/ns/net").stdout.strip()
    assert inside == f"net:[{os.stat(f'/run/netns/{n.netns}').st_ino}]"
    n.cli("rmp", "-f", pod)
    assert n.leaks([pod], []) == []


def test_kill_9_of_the_server_loses_nothing(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod, c = n.run_pod("k8sxts-k9", {"runner": SLEEP, "done": ["sh", "-c", "exit 5"]})
    ip = n.inspectp(pod)["status"]["network"]["ip"]
    pid_before = json.loads(n.cli("inspect", c["runner"]).stdout)["info"]["pid"]
    assert pid_before > 0
    time.sleep(0.3)
    n.kill9()
    n.start()
    pods = json.loads(n.cli("pods", "-o", "json", "--id", pod).stdout)["items"]
    assert [(p["id"], p["state"]) for p in pods] == [(pod, "SANDBOX_READY")]
    assert n.inspectp(pod)["status"]["network"]["ip"] == ip
    runner = n.inspect(c["runner"])
    assert runner["status"]["state"] == "CONTAINER_RUNNING" and runner["info"]["pid"] == pid_before
    done = n.inspect(c["done"])["status"]
    assert (done["state"], done["exitCode"]) == ("CONTAINER_EXITED", 5)
    assert n.cli("exec", "-s", c["runner"], "echo", "alive").stdout == "alive\n"
    # the container keeps running through a second kill, and stops normally afterwards
    n.kill9()
    n.start()
    n.cli("stop", c["runner"])
    assert n.inspect(c["runner"])["status"]["exitCode"] in (137, 143)
    n.cli("rmp", "-f", pod)
    assert n.leaks([pod], [ip]) == []


@pytest.mark.skipif(shutil.which("crictl") is None, reason="crictl (cri-tools v1.26.1) is not packaged in Debian")
def test_outputs_are_crictls(runtime_node: RuntimeNode) -> None:
    """The same server, asked by crictl and by us: byte-identical output (no relative times here)."""
    n = runtime_node
    pod, c = n.run_pod("k8sxts-same", {"c": SLEEP}, annotations={"answer": "y", "n": "42"})
    ctr = c["c"]
    try:
        for verb in (["inspect", ctr], ["inspect", "-o", "yaml", ctr], ["inspectp", pod],
                     ["inspectp", "-o", "yaml", pod], ["pods", "-v", "--id", pod], ["pods", "-o", "yaml", "--id", pod],
                     ["info"], ["info", "-o", "yaml"], ["ps", "-q", "--pod", pod], ["pods", "-q"]):
            ours = n.cli(*verb).stdout
            theirs = subprocess.run(["crictl", "-r", n.endpoint, *verb], capture_output=True, text=True,
                                    check=True).stdout
            assert ours == theirs, verb
        # jsonpb documents (empty maps on two lines, no field newer than crictl's cri-api): the same but for
        # the figures of the moment (timestamps, and for stats every number)
        for verb in (["ps", "-o", "json", "--pod", pod], ["ps", "-o", "yaml", "--pod", pod],
                     ["pods", "-o", "json", "--id", pod], ["stats", "-o", "json", "--pod", pod],
                     ["stats", "-o", "yaml", "--pod", pod], ["statsp", "-o", "json", "--id", pod]):
            mask = r'"\d+"' if verb[0].startswith("stats") else r'(?<=timestamp": )"\d+"'
            ours = re.sub(mask, "N", n.cli(*verb).stdout)
            theirs = re.sub(mask, "N", subprocess.run(["crictl", "-r", n.endpoint, *verb], capture_output=True,
                                                      text=True, check=True).stdout)
            assert ours == theirs, verb
        assert '"annotations": {\n' in n.cli("ps", "-o", "json", "--pod", pod).stdout
    finally:
        n.cli("rmp", "-f", pod)


SLOW_PLUGIN = """#!/bin/sh
# k8sxts test plugin: ADD hangs (the server gets killed meanwhile), everything else succeeds
case "$CNI_COMMAND" in
  ADD) cat >/dev/null; echo $$ > "$0.pid"; exec sleep 120 ;;
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
exit 0
"""


def test_server_killed_during_runp_leaves_a_removable_pod(runtime_node: RuntimeNode) -> None:
    """kill -9 while a CNI ADD is running: after a restart the pod is listed (not ready) and removing it
    frees its namespaces and its address."""
    n = runtime_node
    os.makedirs(n.cni_bin, exist_ok=True)
    plugin = os.path.join(n.cni_bin, "k8sxts-slow")
    with open(plugin, "w") as f:
        f.write(SLOW_PLUGIN)
    os.chmod(plugin, 0o755)
    n.write_conflist(extra=[{"type": "k8sxts-slow"}])
    runp = subprocess.Popen([bin_path("k8sx"), "runtime", "-r", n.endpoint, "-t", "60s", "runp",
                             n.pod_config("k8sxts-crash")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(plugin + ".pid"):
            assert time.monotonic() < deadline, "the slow plugin never ran"
            assert runp.poll() is None, runp.communicate()
            time.sleep(0.05)
        assert _files(n.ipam_dir), "bridge/host-local ran before the slow plugin"
        n.kill9()
        assert runp.wait(30) != 0  # the client sees the server go away
    finally:
        if runp.poll() is None:
            runp.kill()
            runp.wait()
        with contextlib.suppress(OSError, ValueError), open(plugin + ".pid") as f:
            os.kill(int(f.read()), signal.SIGKILL)
        n.write_conflist()
    n.start()
    pods = json.loads(n.cli("pods", "-o", "json", "--name", "k8sxts-crash").stdout)["items"]
    assert [p["state"] for p in pods] == ["SANDBOX_NOTREADY"]
    pod = pods[0]["id"]
    assert os.path.exists(os.path.join(n.state, "pods", pod, "ns", "net"))
    n.cli("rmp", pod)
    ips = [f for f in _files(n.ipam_dir) if f.startswith("10.")]
    assert ips == [] and n.leaks([pod], []) == []


def _files(top: str) -> list[str]:
    return [name for _root, _dirs, names in os.walk(top) for name in names]



def test_logs_follow_update_and_stats_of_a_pod(runtime_node: RuntimeNode) -> None:
    n = runtime_node
    pod, c = n.run_pod("k8sxts-follow", {
        "ticker": ["sh", "-c", "sleep 1; for i in 1 2 3; do echo tick$i; sleep 0.3; done"],
        "idle": SLEEP})
    follow = n.cli("logs", "-f", c["ticker"])  # returns when the container exits, not before
    assert follow.stdout == "tick1\ntick2\ntick3\n"
    status = n.inspect(c["ticker"])["status"]
    assert status["state"] == "CONTAINER_EXITED" and status["exitCode"] == 0
    # update: the new memory limit lands in the container's cgroup
    n.cli("update", "--memory", str(64 * 1024 * 1024), c["idle"])
    limit = n.cli("exec", "-s", c["idle"], "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").stdout
    assert int(limit) == 64 * 1024 * 1024
    resources = n.inspect(c["idle"])["status"]["resources"]["linux"]
    assert resources["memoryLimitInBytes"] == str(64 * 1024 * 1024)
    stats = json.loads(n.cli("statsp", "-o", "json", "--id", pod).stdout)["stats"]
    assert [s["attributes"]["id"] for s in stats] == [pod]
    assert int(stats[0]["linux"]["memory"]["workingSetBytes"]["value"]) > 0
    table = n.cli("stats", "-s", "0", "--pod", pod).stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "NAME", "CPU", "%", "MEM", "DISK", "INODES"]
    assert [line.split()[1] for line in table[1:]] == ["idle"]  # the exited ticker is not shown without -a
    n.cli("rmp", "-f", pod)
