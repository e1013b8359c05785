"""``k8sx cni`` end to end with the Debian reference plugins, in network namespaces the tests create.

The node is a namespace too (never the root one): the whole CLI runs inside it with
``ip netns exec <node> k8sx cni ...``, as cni.md's method ran cnitool, so the bridge, host veths
and iptables rules live there and vanish with it. Pods are namespaces under /var/run/netns.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import bin_path, unique

REF_PLUGINS = "/usr/lib/cni"
pytestmark = pytest.mark.root


class Node:
    """A node namespace with a conf dir, a host-local dataDir and a libcni cache dir of its own."""

    def __init__(self, netns) -> None:
        self.netns = netns
        self.name = netns("rnode")
        self.dir = tempfile.mkdtemp(prefix="k8sxtr-")
        self.conf_dir = os.path.join(self.dir, "net.d")
        self.cache_dir = os.path.join(self.dir, "cache")
        self.data_dir = os.path.join(self.dir, "host-local")
        os.makedirs(self.conf_dir)
        self.bridge = unique("rbr")

    def write_conf(self, filename: str, obj: dict | str) -> str:
        path = os.path.join(self.conf_dir, filename)
        with open(path, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj, indent=2) + "\n")
        return path

    def bridge_list(self, name: str = "k8sxtr-net", version: str = "1.0.0", subnet: str = "10.199.7.0/24") -> dict:
        return {"cniVersion": version, "name": name, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": self.data_dir, "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "loopback"}]}

    def pod(self) -> str:
        return self.netns("rpod")

    def cni(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "NETCONFPATH": self.conf_dir, "CNI_PATH": REF_PLUGINS, **(env or {})}
        for var in ("CNI_IFNAME", "CNI_ARGS", "CAP_ARGS"):
            if env is None or var not in env:
                full_env.pop(var, None)
        cache = ["--cache-dir", self.cache_dir] if args[0] in ("add", "check", "del", "gc") else []
        return subprocess.run(["ip", "netns", "exec", self.name, bin_path("k8sx"), "cni", *args, *cache],
                              env=full_env, capture_output=True, text=True, timeout=120)

    def ok(self, *args: str, env: dict | None = None) -> str:
        p = self.cni(*args, env=env)
        assert p.returncode == 0, f"k8sx cni {' '.join(args)}: rc={p.returncode}\n{p.stderr}"
        return p.stdout

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def node(netns):
    n = Node(netns)
    yield n
    n.cleanup()  # the namespaces (and with them bridge, veths, rules) go with the netns fixture


def pod_addrs(pod: str, ifname: str) -> list[str]:
    p = subprocess.run(["ip", "-n", pod, "-j", "addr", "show", "dev", ifname], capture_output=True, text=True)
    if p.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(p.stdout) for a in link["addr_info"]
            if a["family"] == "inet"]


def ping(pod: str, addr: str, wait: int = 5) -> bool:
    """One echo answered within ``wait`` s (generous: the first one waits for ARP, on a loaded CI box)."""
    return subprocess.run(["ip", "netns", "exec", pod, "busybox", "ping", "-c", "1", "-W", str(wait), addr],
                          capture_output=True).returncode == 0


def cnitool_id(path: str) -> str:
    import hashlib

    return "cnitool-" + hashlib.sha512(path.encode()).hexdigest()[:20]


def test_add_check_del_bridge_chain(node):
    conf_path = node.write_conf("10-k8sxtr.conflist", node.bridge_list())
    pod = node.pod()
    netns_path = f"/var/run/netns/{pod}"
    out = node.ok("add", "k8sxtr-net", pod, env={"CNI_IFNAME": "k8sxtr-eth0"})
    result = json.loads(out)
    assert out == json.dumps(result, indent=4) + "\n"  # cnitool's pretty-printing, plugin's key order
    # The reference shape (cni.md section 2).
    assert list(result) == ["cniVersion", "interfaces", "ips", "routes", "dns"]
    assert result["cniVersion"] == "1.0.0" and result["dns"] == {}
    bridge, veth, cont = result["interfaces"]
    assert bridge["name"] == node.bridge and veth["name"].startswith("veth") and "sandbox" not in veth
    assert cont["name"] == "k8sxtr-eth0" and cont["sandbox"] == netns_path
    assert result["ips"] == [{"interface": 2, "address": "10.199.7.2/24", "gateway": "10.199.7.1"}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}]
    assert pod_addrs(pod, "k8sxtr-eth0") == ["10.199.7.2/24"]
    assert ping(pod, "10.199.7.1")

    # libcni's cache: path, modes, exact bytes.
    cid = cnitool_id(netns_path)
    cache_file = os.path.join(node.cache_dir, "results", f"k8sxtr-net-{cid}-k8sxtr-eth0")
    assert stat.S_IMODE(os.stat(cache_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(cache_file)).st_mode) == 0o700
    with open(conf_path, "rb") as f:
        conf_bytes = f.read()
    with open(cache_file, "rb") as f:
        cached = f.read()
    config_b64 = base64.b64encode(conf_bytes).decode()
    result_json = json.dumps(result, sort_keys=True, separators=(",", ":"))
    assert cached == (
        f'{{"kind":"cniCacheV1","containerId":"{cid}","config":"{config_b64}","ifName":"k8sxtr-eth0",'
        f'"networkName":"k8sxtr-net","netns":"{netns_path}","result":{result_json}}}').encode()
    # host-local's reservation for this container.
    with open(os.path.join(node.data_dir, "k8sxtr-net", "10.199.7.2"), "rb") as f:
        assert f.read() == f"{cid}\r\nk8sxtr-eth0".encode()

    assert node.ok("check", "k8sxtr-net", netns_path, "--ifname", "k8sxtr-eth0") == ""
    assert node.ok("del", "k8sxtr-net", pod, "--ifname", "k8sxtr-eth0") == ""
    assert pod_addrs(pod, "k8sxtr-eth0") == []
    assert not os.path.exists(cache_file)
    assert not os.path.exists(os.path.join(node.data_dir, "k8sxtr-net", "10.199.7.2"))
    assert node.ok("del", "k8sxtr-net", pod, "--ifname", "k8sxtr-eth0") == ""  # DEL twice succeeds
    p = node.cni("check", "k8sxtr-net", pod, "--ifname", "k8sxtr-eth0")  # nothing attached any more
    assert p.returncode == 1 and p.stderr.startswith("Error: ") and "Traceback" not in p.stderr


def test_pods_on_one_bridge_reach_each_other(node):
    node.write_conf("10-k8sxtr.conflist", node.bridge_list(subnet="10.199.8.0/24"))
    pods = [node.pod(), node.pod()]
    addrs = []
    for pod in pods:
        result = json.loads(node.ok("add", "k8sxtr-net", pod))
        addrs.append(result["ips"][0]["address"].split("/")[0])
    assert sorted(addrs) == ["10.199.8.2", "10.199.8.3"]
    assert ping(pods[0], addrs[1]) and ping(pods[1], addrs[0])
    assert ping(pods[0], "10.199.8.1") and ping(pods[1], "10.199.8.1")
    for pod in pods:
        node.ok("del", "k8sxtr-net", pod)
    assert not ping(pods[0], addrs[1], wait=1)


def test_0_3_1_list_check_refused(node):
    node.write_conf("10-k8sxtr.conflist", node.bridge_list(version="0.3.1", subnet="10.199.9.0/24"))
    pod = node.pod()
    result = json.loads(node.ok("add", "k8sxtr-net", pod))
    assert result["cniVersion"] == "0.3.1" and result["ips"][0]["version"] == "4"
    p = node.cni("check", "k8sxtr-net", pod)
    assert p.returncode == 1
    assert p.stderr == 'Error: configuration version "0.3.1" does not support the CHECK command, code 1\n'
    node.ok("del", "k8sxtr-net", pod)
    assert pod_addrs(pod, "eth0") == []


def test_table_and_trace_output(node):
    node.write_conf("10-k8sxtr.conflist", node.bridge_list(subnet="10.199.10.0/24"))
    pod = node.pod()
    p = node.cni("add", "k8sxtr-net", pod, "-o", "table", "--trace")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["INTERFACE", "ADDRESS", "GATEWAY", "MAC", "SANDBOX"]
    assert lines[1].split()[:3] == ["eth0", "10.199.10.2/24", "10.199.10.1"]
    assert "ADD k8sxtr-net" in p.stderr and "bridge" in p.stderr and "loopback" in p.stderr
    assert p.stderr.count(" ms") == 3 and "10.199.10.2/24" in p.stderr
    p = node.cni("del", "k8sxtr-net", pod, "--trace")
    assert p.returncode == 0 and p.stdout == ""
    assert p.stderr.index("loopback") < p.stderr.index("bridge")  # reverse order


def test_error_cases_are_clear(node):
    pod = node.pod()

    def fails(*args, rc=1, env=None):
        p = node.cni(*args, env=env)
        assert p.returncode == rc, p.stderr
        assert p.stderr.startswith("Error: ") and "Traceback" not in p.stderr and p.stdout == ""
        return p.stderr.splitlines()[0]

    node.write_conf("10-k8sxtr.conflist", node.bridge_list(subnet="10.199.11.0/24"))
    # missing plugin
    msg = fails("add", "k8sxtr-net", pod, env={"CNI_PATH": "/nonexistent-k8sxtr"})
    assert msg == 'Error: failed to find plugin "bridge" in path [/nonexistent-k8sxtr], code 999'
    # unknown network
    assert 'no net configuration with name "k8sxtr-nope"' in fails("add", "k8sxtr-nope", pod)
    # missing netns
    assert "/var/run/netns/k8sxtr-nonexistent does not exist" in fails("add", "k8sxtr-net", "k8sxtr-nonexistent",
                                                                       rc=2)
    # a plugin's error object
    bad = node.bridge_list("k8sxtr-bad", subnet="10.199.12.0/33")
    node.write_conf("20-k8sxtr-bad.conflist", bad)
    assert fails("add", "k8sxtr-bad", pod) == "Error: bridge: invalid CIDR address: 10.199.12.0/33, code 999"
    # an unknown version, named with its file
    future = node.write_conf("30-k8sxtr-future.conflist", node.bridge_list("k8sxtr-future", version="9.9.9"))
    msg = fails("add", "k8sxtr-future", pod)
    assert 'unsupported CNI version "9.9.9"' in msg and future in msg and msg.endswith("code 1")
    # bad JSON: the file is named (and, as in libcni, it breaks the lookup of networks after it)
    broken = node.write_conf("05-k8sxtr-broken.conflist", '{"name": "k8sxtr-broken", "plugins": [')
    msg = fails("add", "k8sxtr-net", pod)
    assert broken in msg and "error parsing configuration list" in msg and msg.endswith("code 6")
    ls = node.ok("ls", "-o", "json")
    rows = {os.path.basename(r["file"]): r for r in json.loads(ls)}
    assert rows["05-k8sxtr-broken.conflist"]["error"] and rows["10-k8sxtr.conflist"]["name"] == "k8sxtr-net"
    assert pod_addrs(pod, "eth0") == []


def test_concurrent_adds_get_distinct_ips_and_dels_free_them(node):
    node.write_conf("10-k8sxtr.conflist", node.bridge_list(subnet="10.199.13.0/24"))
    pod = node.pod()
    n = 20

    def add(i: int) -> subprocess.CompletedProcess:
        return node.cni("add", "k8sxtr-net", pod, "--container-id", f"k8sxtr-c{i}", "--ifname", f"k8sxtr{i}")

    def delete(i: int) -> subprocess.CompletedProcess:
        return node.cni("del", "k8sxtr-net", pod, "--container-id", f"k8sxtr-c{i}", "--ifname", f"k8sxtr{i}")

    with ThreadPoolExecutor(n) as pool:
        adds = list(pool.map(add, range(n)))
    assert all(p.returncode == 0 for p in adds), [p.stderr for p in adds if p.returncode]
    ips = [json.loads(p.stdout)["ips"][0]["address"] for p in adds]
    assert len(set(ips)) == n
    for i, ip in enumerate(ips):
        assert pod_addrs(pod, f"k8sxtr{i}") == [ip]
    store = os.path.join(node.data_dir, "k8sxtr-net")
    assert len([f for f in os.listdir(store) if f.startswith("10.199.13.")]) == n
    assert len(os.listdir(os.path.join(node.cache_dir, "results"))) == n
    with ThreadPoolExecutor(n) as pool:
        dels = list(pool.map(delete, range(n)))
    assert all(p.returncode == 0 for p in dels), [p.stderr for p in dels if p.returncode]
    assert [f for f in os.listdir(store) if f.startswith("10.199.13.")] == []
    assert os.listdir(os.path.join(node.cache_dir, "results")) == []


def test_gc_removes_stale_attachments(node):
    node.write_conf("10-k8sxtr.conflist", node.bridge_list(subnet="10.199.14.0/24"))
    keep, stale = node.pod(), node.pod()
    node.ok("add", "k8sxtr-net", keep)
    node.ok("add", "k8sxtr-net", stale)
    keep_id = cnitool_id(f"/var/run/netns/{keep}")
    out = json.loads(node.ok("gc", "k8sxtr-net", "--valid", keep_id, "-o", "json"))
    assert out == [{"containerId": cnitool_id(f"/var/run/netns/{stale}"), "ifname": "eth0",
                    "netns": f"/var/run/netns/{stale}"}]
    assert pod_addrs(stale, "eth0") == [] and pod_addrs(keep, "eth0") == ["10.199.14.2/24"]
    assert node.ok("check", "k8sxtr-net", keep) == ""
    assert "k8sxtr-net: ready" in node.ok("status", "k8sxtr-net")
    node.ok("del", "k8sxtr-net", keep)


def test_del_after_the_netns_is_gone_frees_the_address(node):
    node.write_conf("10-k8sxtr.conflist", node.bridge_list(subnet="10.199.15.0/24"))
    pod = node.pod()
    node.ok("add", "k8sxtr-net", pod)
    store = os.path.join(node.data_dir, "k8sxtr-net")
    assert "10.199.15.2" in os.listdir(store)
    subprocess.run(["ip", "netns", "del", pod], check=True)
    assert node.ok("del", "k8sxtr-net", pod) == ""  # the spec's DEL must succeed without the netns
    assert "10.199.15.2" not in os.listdir(store)
    assert os.listdir(os.path.join(node.cache_dir, "results")) == []
    p = node.cni("add", "k8sxtr-net", pod)  # but ADD into a missing netns is refused clearly
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
