"""k8sx's CNI plugins against the reference ones, in network namespaces the tests create, with traffic.

The node is a namespace too (never the root one). The runner (``k8sx.cni.runner``) is driven from
a thread that has entered the node namespace, as the CRI server would drive it: it execs the
Debian reference plugins (children inherit the thread's namespace) and runs ours in-process. The
bridge, host veths and iptables rules live in the node namespace and vanish with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import unique

from k8sx.cni.conf import conf_list_from_bytes
from k8sx.cni.install import install
from k8sx.cni.runner import Runner, RuntimeConf
from k8sx.cni.types import CNIError
from k8sx.net import ns

REF = "/usr/lib/cni"
pytestmark = pytest.mark.root


def in_ns(fd: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a fresh thread that has entered the namespace ``fd``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with ns.entered(fd):
                box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Node:
    """A node namespace with our plugins installed, a host-local dataDir and a libcni cache."""

    def __init__(self, netns: Any) -> None:
        self.netns = netns
        self.name = netns("pnode")
        self.fd = ns.open_netns(f"/var/run/netns/{self.name}")
        self.dir = tempfile.mkdtemp(prefix="k8sxtp-", dir="/run")
        self.bin = os.path.join(self.dir, "bin")
        install(self.bin)
        self.data_dir = os.path.join(self.dir, "ipam")
        self.runner = Runner([self.bin, REF], cache_dir=os.path.join(self.dir, "cache"))
        self.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def pod(self) -> tuple[str, str]:
        name = self.netns("ppod")
        return name, f"/var/run/netns/{name}"

    def bridge_list(self, prefix: str, name: str, bridge: str, subnet: str, version: str = "1.0.0",
                    portmap: bool = False) -> dict:
        plugins: list[dict] = [
            {"type": prefix + "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": prefix + "host-local", "dataDir": self.data_dir, "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}}]
        if portmap:
            plugins.append({"type": prefix + "portmap", "capabilities": {"portMappings": True}, "snat": True})
        plugins.append({"type": prefix + "loopback"})
        return {"cniVersion": version, "name": name, "plugins": plugins}

    def _rt(self, netns_path: str, cid: str, ifname: str, cap: dict | None) -> RuntimeConf:
        return RuntimeConf(container_id=cid, netns=netns_path, ifname=ifname, capability_args=cap or {})

    def add(self, conflist: dict, netns_path: str, cid: str, ifname: str = "eth0", cap: dict | None = None) -> dict:
        netconf = conf_list_from_bytes(json.dumps(conflist).encode())
        return in_ns(self.fd, self.runner.add_network, netconf, self._rt(netns_path, cid, ifname, cap))

    def check(self, conflist: dict, netns_path: str, cid: str, ifname: str = "eth0", cap: dict | None = None) -> None:
        netconf = conf_list_from_bytes(json.dumps(conflist).encode())
        in_ns(self.fd, self.runner.check_network, netconf, self._rt(netns_path, cid, ifname, cap))

    def delete(self, conflist: dict, netns_path: str, cid: str, ifname: str = "eth0", cap: dict | None = None) -> None:
        netconf = conf_list_from_bytes(json.dumps(conflist).encode())
        in_ns(self.fd, self.runner.del_network, netconf, self._rt(netns_path, cid, ifname, cap))

    def sh(self, *cmd: str) -> str:
        p = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{cmd}: {p.stderr}"
        return p.stdout

    def nat(self) -> str:
        return self.sh("iptables-save", "-t", "nat")

    def close(self) -> None:
        os.close(self.fd)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def node(netns):
    n = Node(netns)
    yield n
    n.close()  # namespaces (bridge, veths, rules with them) go with the netns fixture


def shape(obj: Any) -> Any:
    """Keys (in order) and value types, recursively: what "a result of the same shape" means."""
    if isinstance(obj, dict):
        return [(k, shape(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [shape(v) for v in obj]
    return type(obj).__name__


def pod_addrs(pod: str, ifname: str = "eth0") -> list[str]:
    p = subprocess.run(["ip", "-n", pod, "-j", "addr", "show", "dev", ifname], capture_output=True, text=True)
    if p.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(p.stdout) for a in link["addr_info"]
            if a["family"] == "inet"]


def ping(pod: str, addr: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", pod, "busybox", "ping", "-c", "1", "-W", "2", addr],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0", "0.3.1"])
def test_same_result_shape_and_state_as_reference(node, version):
    ref_pod, ref_path = node.pod()
    our_pod, our_path = node.pod()
    ref_br, our_br = unique("pbr"), unique("pbr")
    ref_list = node.bridge_list("", "k8sxtp-ref", ref_br, "10.198.1.0/24", version)
    our_list = node.bridge_list("k8sx-", "k8sxtp-ours", our_br, "10.198.2.0/24", version)
    ref = node.add(ref_list, ref_path, "k8sxtp-c1")
    ours = node.add(our_list, our_path, "k8sxtp-c1")
    assert shape(ours) == shape(ref)
    assert ours["cniVersion"] == ref["cniVersion"] == version
    strip = re.compile(r"10\.198\.[12]\.")
    assert strip.sub("X.", json.dumps(ours["ips"])) == strip.sub("X.", json.dumps(ref["ips"]))
    assert ours["routes"] == ref["routes"] and ours["dns"] == ref["dns"]
    br, veth, cont = ours["interfaces"]
    assert br["name"] == our_br and re.fullmatch(r"veth[0-9a-f]{8}", veth["name"])
    assert cont == {"name": "eth0", "mac": cont["mac"], "sandbox": our_path}
    assert pod_addrs(our_pod) == ["10.198.2.2/24"]
    routes = subprocess.run(["ip", "-n", our_pod, "route"], capture_output=True, text=True).stdout
    assert "default via 10.198.2.1 dev eth0" in routes
    assert ping(our_pod, "10.198.2.1") and ping(ref_pod, "10.198.1.1")
    # Same kernel state on the node: the bridge's gateway address, hairpin on the host port.
    assert "inet 10.198.2.1/24" in node.sh("ip", "addr", "show", "dev", our_br)
    assert "hairpin on" in node.sh("bridge", "-d", "link", "show", "dev", veth["name"])
    # ipMasq: the reference's chain name and comment, one chain per attachment.
    nat = node.nat()
    for net, cidr in (("k8sxtp-ref", "10.198.1"), ("k8sxtp-ours", "10.198.2")):
        from k8sx.net.iptables import chain_name

        chain = chain_name("CNI-", net, "k8sxtp-c1")
        comment = f'--comment "name: \\"{net}\\" id: \\"k8sxtp-c1\\""'
        assert f"-A POSTROUTING -s {cidr}.2/32 -m comment {comment} -j {chain}" in nat
        assert f"-A {chain} -d {cidr}.0/24 -m comment {comment} -j ACCEPT" in nat
        assert f"-A {chain} ! -d 224.0.0.0/4 -m comment {comment} -j MASQUERADE" in nat
    # The reservation file is the reference's format.
    with open(os.path.join(node.data_dir, "k8sxtp-ours", "10.198.2.2"), "rb") as fh:
        assert fh.read() == b"k8sxtp-c1\r\neth0"
    if version != "0.3.1":
        node.check(ref_list, ref_path, "k8sxtp-c1")
        node.check(our_list, our_path, "k8sxtp-c1")
    node.delete(ref_list, ref_path, "k8sxtp-c1")
    node.delete(our_list, our_path, "k8sxtp-c1")
    assert pod_addrs(our_pod) == [] and pod_addrs(ref_pod) == []
    assert "CNI-" not in node.nat()
    assert sorted(os.listdir(os.path.join(node.data_dir, "k8sxtp-ours"))) == ["last_reserved_ip.0", "lock"]
    node.delete(our_list, our_path, "k8sxtp-c1")  # DEL twice succeeds


def test_pods_reach_each_other_and_gateway(node):
    conflist = node.bridge_list("k8sx-", "k8sxtp-net", unique("pbr"), "10.198.3.0/24")
    pods = [node.pod() for _ in range(2)]
    results = [node.add(conflist, path, f"k8sxtp-c{i}") for i, (_, path) in enumerate(pods)]
    addrs = [r["ips"][0]["address"].split("/")[0] for r in results]
    assert addrs == ["10.198.3.2", "10.198.3.3"]
    assert ping(pods[0][0], "10.198.3.1")
    assert ping(pods[0][0], addrs[1]) and ping(pods[1][0], addrs[0])
    for i, (_, path) in enumerate(pods):
        node.check(conflist, path, f"k8sxtp-c{i}")
        node.delete(conflist, path, f"k8sxtp-c{i}")
    assert not ping(pods[0][0], "10.198.3.1")


def test_check_detects_a_missing_address(node):
    conflist = node.bridge_list("k8sx-", "k8sxtp-net", unique("pbr"), "10.198.4.0/24")
    pod, path = node.pod()
    node.add(conflist, path, "k8sxtp-c1")
    subprocess.run(["ip", "-n", pod, "addr", "flush", "dev", "eth0"], check=True)
    with pytest.raises(CNIError, match="10.198.4.2/24 not found"):
        node.check(conflist, path, "k8sxtp-c1")
    node.delete(conflist, path, "k8sxtp-c1")


def test_del_after_the_netns_is_gone_cleans_the_node(node, netns):
    conflist = node.bridge_list("k8sx-", "k8sxtp-net", unique("pbr"), "10.198.5.0/24")
    pod, path = node.pod()
    node.add(conflist, path, "k8sxtp-c1")
    subprocess.run(["ip", "netns", "del", pod], check=True)
    node.delete(conflist, path, "k8sxtp-c1")
    node.delete(conflist, path, "k8sxtp-c1")
    assert "CNI-" not in node.nat()
    assert sorted(os.listdir(os.path.join(node.data_dir, "k8sxtp-net"))) == ["last_reserved_ip.0", "lock"]


SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(8)
print("ready", flush=True)
for _ in range(int(sys.argv[1])):
    c, peer = s.accept()
    c.sendall(("k8sxtp-hello from " + peer[0]).encode())
    c.close()
"""


def fetch(addr: str, port: int) -> str:
    import socket

    with socket.create_connection((addr, port), timeout=5) as c:
        return c.recv(100).decode()


@pytest.mark.parametrize("prefix", ["k8sx-", ""], ids=["ours", "reference"])
def test_portmap_forwards_host_port(node, prefix):
    conflist = node.bridge_list(prefix, "k8sxtp-pm", unique("pbr"), "10.198.6.0/24", portmap=True)
    cap = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                            {"hostPort": 18081, "containerPort": 80, "protocol": "tcp", "hostIP": "10.198.6.1"}]}
    pod, path = node.pod()
    client_pod, client_path = node.pod()
    node.add(conflist, path, "k8sxtp-srv", cap=cap)
    node.add(conflist, client_path, "k8sxtp-cli")
    server = subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, "-c", SERVER, "4"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        # From the node to its own address and to 127.0.0.1 (route_localnet + SNAT), then from another pod.
        assert in_ns(node.fd, fetch, "10.198.6.1", 18080).startswith("k8sxtp-hello")
        assert in_ns(node.fd, fetch, "127.0.0.1", 18080).startswith("k8sxtp-hello")
        assert in_ns(node.fd, fetch, "10.198.6.1", 18081).startswith("k8sxtp-hello")  # hostIP
        client_fd = ns.open_netns(client_path)
        try:
            assert in_ns(client_fd, fetch, "10.198.6.1", 18080).startswith("k8sxtp-hello")
        finally:
            os.close(client_fd)
        server.wait(10)
    finally:
        server.kill()
        server.wait()
    bridge = conflist["plugins"][0]["bridge"]
    assert node.sh("sysctl", "-n", f"net.ipv4.conf.{bridge}.route_localnet").strip() == "1"
    nat = node.nat()
    from k8sx.net.iptables import chain_name

    dn = chain_name("CNI-DN-", "k8sxtp-pm", "k8sxtp-srv")
    assert f"-A {dn} -p tcp -m tcp --dport 18080 -j DNAT --to-destination 10.198.6.2:80" in nat
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT" in nat
    if prefix:  # the reference's CHECK is broken in v1.1.1 (cni.md section 6); ours works
        node.check(conflist, path, "k8sxtp-srv", cap=cap)
    node.delete(conflist, path, "k8sxtp-srv", cap=cap)
    node.delete(conflist, path, "k8sxtp-srv", cap=cap)
    node.delete(conflist, client_path, "k8sxtp-cli")
    assert f":{dn}" not in node.nat()


def test_portmap_rules_are_interchangeable_with_the_reference(node):
    """Reference portmap creates the shared chains, ours adds a pod and removes it, and vice versa."""
    cap = {"portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]}
    ref_list = node.bridge_list("", "k8sxtp-pm", unique("pbr"), "10.198.7.0/24", portmap=True)
    our_list = json.loads(json.dumps(ref_list))
    our_list["plugins"][1]["type"] = "k8sx-portmap"
    (_, p1), (_, p2) = node.pod(), node.pod()
    node.add(ref_list, p1, "k8sxtp-a", cap=cap)
    node.add(our_list, p2, "k8sxtp-b", cap={"portMappings": [{"hostPort": 18082, "containerPort": 80}]})
    node.delete(ref_list, p2, "k8sxtp-b", cap={"portMappings": [{"hostPort": 18082, "containerPort": 80}]})
    node.delete(our_list, p1, "k8sxtp-a", cap=cap)
    assert "CNI-DN-" not in node.nat()


def test_twenty_concurrent_adds_get_distinct_ips_and_dels_free_them(node):
    conflist = node.bridge_list("k8sx-", "k8sxtp-many", unique("pbr"), "10.198.8.0/24")
    pods = [node.pod() for _ in range(20)]
    netconf = conf_list_from_bytes(json.dumps(conflist).encode())

    def attach(i: int) -> str:
        rt = RuntimeConf(container_id=f"k8sxtp-c{i}", netns=pods[i][1], ifname="eth0")
        with ns.entered(node.fd):
            return node.runner.add_network(netconf, rt)["ips"][0]["address"]

    def detach(i: int) -> None:
        rt = RuntimeConf(container_id=f"k8sxtp-c{i}", netns=pods[i][1], ifname="eth0")
        with ns.entered(node.fd):
            node.runner.del_network(netconf, rt)

    with ThreadPoolExecutor(20) as pool:
        addrs = list(pool.map(attach, range(20)))
    assert len(set(addrs)) == 20
    assert all(pod_addrs(pods[i][0]) == [addrs[i]] for i in range(20))
    files = os.listdir(os.path.join(node.data_dir, "k8sxtp-many"))
    assert len([f for f in files if f.startswith("10.198.8.")]) == 20
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(detach, range(20)))
    assert sorted(os.listdir(os.path.join(node.data_dir, "k8sxtp-many"))) == ["last_reserved_ip.0", "lock"]
    assert "CNI-" not in node.nat()


FLANNEL_ENV = "FLANNEL_NETWORK=10.198.0.0/16\nFLANNEL_SUBNET=10.198.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


@pytest.mark.parametrize("reference_names", [False, True], ids=["k8sx-names", "reference-names"])
def test_flannel_delegates_to_bridge_and_host_local(node, reference_names):
    bin_dir = os.path.join(node.dir, "refnames" if reference_names else "bin")
    if reference_names:
        install(bin_dir, reference_names=True)
        node.runner = Runner([bin_dir], cache_dir=os.path.join(node.dir, "cache"))
    prefix = "" if reference_names else "k8sx-"
    subnet_env = os.path.join(node.dir, "subnet.env")
    with open(subnet_env, "w") as fh:
        fh.write(FLANNEL_ENV)
    bridge = unique("pcni")
    conflist = {"name": "k8sxtp-flannel", "cniVersion": "1.0.0", "plugins": [
        {"type": prefix + "flannel", "subnetFile": subnet_env, "dataDir": os.path.join(node.dir, "flannel"),
         "ipam": {"type": prefix + "host-local", "dataDir": node.data_dir},
         "delegate": {"bridge": bridge, "hairpinMode": True, "isDefaultGateway": True}}]}
    # The default delegate types follow the naming the plugin was installed under.
    del conflist["plugins"][0]["ipam"]["type"]
    pod, path = node.pod()
    result = node.add(conflist, path, "k8sxtp-f1")
    with open(os.path.join(node.dir, "flannel", "k8sxtp-f1"), "rb") as fh:
        saved = fh.read()
    assert saved == (
        f'{{"bridge":"{bridge}","cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":{{"dataDir":'
        f'"{node.data_dir}","ranges":[[{{"subnet":"10.198.9.0/24"}}]],"routes":[{{"dst":"10.198.0.0/16"}}],'
        f'"type":"{prefix}host-local"}},"isDefaultGateway":true,"isGateway":true,"mtu":1450,'
        f'"name":"k8sxtp-flannel","type":"{prefix}bridge"}}').encode()
    assert result["ips"] == [{"interface": 2, "address": "10.198.9.2/24", "gateway": "10.198.9.1"}]
    assert result["routes"] == [{"dst": "10.198.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.198.9.1"}]
    assert "mtu 1450" in subprocess.run(["ip", "-n", pod, "link", "show", "eth0"], capture_output=True,
                                        text=True).stdout
    assert ping(pod, "10.198.9.1")
    assert "CNI-" not in node.nat()  # ipMasq false: flanneld masquerades
    node.check(conflist, path, "k8sxtp-f1")
    node.delete(conflist, path, "k8sxtp-f1")
    assert not os.path.exists(os.path.join(node.dir, "flannel", "k8sxtp-f1"))
    assert pod_addrs(pod) == []
    node.delete(conflist, path, "k8sxtp-f1")


def test_our_bridge_with_reference_host_local_and_reference_bridge_with_ours(node):
    (_, p1), (_, p2) = node.pod(), node.pod()
    mixed1 = node.bridge_list("k8sx-", "k8sxtp-mix", unique("pbr"), "10.198.10.0/24")
    mixed1["plugins"][0]["ipam"]["type"] = "host-local"
    mixed2 = node.bridge_list("", "k8sxtp-mix", mixed1["plugins"][0]["bridge"], "10.198.10.0/24")
    mixed2["plugins"][0]["ipam"]["type"] = "k8sx-host-local"  # exec'ed by the reference bridge
    a = node.add(mixed1, p1, "k8sxtp-m1")
    b = node.add(mixed2, p2, "k8sxtp-m2")
    assert [a["ips"][0]["address"], b["ips"][0]["address"]] == ["10.198.10.2/24", "10.198.10.3/24"]
    node.delete(mixed2, p2, "k8sxtp-m2")
    node.delete(mixed1, p1, "k8sxtp-m1")
    assert sorted(os.listdir(os.path.join(node.data_dir, "k8sxtp-mix"))) == ["last_reserved_ip.0", "lock"]


def test_status_and_gc_collect_leaked_state(node):
    """Spec 1.1: GC through the runner removes what a lost attachment (no cache entry) left behind."""
    conflist = node.bridge_list("k8sx-", "k8sxtp-gc", unique("pbr"), "10.198.11.0/24", "1.1.0", portmap=True)
    cap = {"portMappings": [{"hostPort": 18090, "containerPort": 80}]}
    netconf = conf_list_from_bytes(json.dumps(conflist).encode())
    assert in_ns(node.fd, node.runner.get_status, netconf) is True
    (_, keep), (_, lost) = node.pod(), node.pod()
    node.add(conflist, keep, "k8sxtp-keep", cap=cap)
    node.add(conflist, lost, "k8sxtp-lost", cap=cap)
    os.remove(os.path.join(node.dir, "cache", "results", "k8sxtp-gc-k8sxtp-lost-eth0"))
    in_ns(node.fd, node.runner.gc, netconf, [("k8sxtp-keep", "eth0")])
    from k8sx.net.iptables import chain_name

    nat = node.nat()
    for cid, present in (("k8sxtp-keep", True), ("k8sxtp-lost", False)):
        assert (f":{chain_name('CNI-', 'k8sxtp-gc', cid)} " in nat) is present
        assert (f":{chain_name('CNI-DN-', 'k8sxtp-gc', cid)} " in nat) is present
    left = [f for f in os.listdir(os.path.join(node.data_dir, "k8sxtp-gc")) if f.startswith("10.")]
    assert left == ["10.198.11.2"]
    node.delete(conflist, keep, "k8sxtp-keep", cap=cap)


def test_dual_stack_same_shape_as_reference_and_traffic(node):
    def dual(prefix: str, name: str, n: int) -> dict:
        conflist = node.bridge_list(prefix, name, unique("pbr"), f"10.198.{12 + n}.0/24")
        conflist["plugins"][0]["ipam"]["ranges"].append([{"subnet": f"fd00:198:{12 + n}::/64"}])
        conflist["plugins"][0]["ipam"]["routes"].append({"dst": "::/0"})
        return conflist

    (_, ref_path), (our_pod, our_path) = node.pod(), node.pod()
    ref_list, our_list = dual("", "k8sxtp-ref6", 0), dual("k8sx-", "k8sxtp-our6", 1)
    ref = node.add(ref_list, ref_path, "k8sxtp-c6")
    ours = node.add(our_list, our_path, "k8sxtp-c6")
    assert shape(ours) == shape(ref)
    assert [i["address"] for i in ours["ips"]] == ["10.198.13.2/24", "fd00:198:13::2/64"]
    assert [i["gateway"] for i in ours["ips"]] == ["10.198.13.1", "fd00:198:13::1"]
    assert ours["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    routes6 = subprocess.run(["ip", "-n", our_pod, "-6", "route"], capture_output=True, text=True).stdout
    assert "default via fd00:198:13::1 dev eth0" in routes6
    reached = False
    for _ in range(30):  # the node's bridge address may still be in DAD
        if subprocess.run(["ip", "netns", "exec", our_pod, "busybox", "ping", "-6", "-c", "1", "-W", "1",
                           "fd00:198:13::1"], capture_output=True).returncode == 0:
            reached = True
            break
        time.sleep(0.2)
    assert reached
    node.check(our_list, our_path, "k8sxtp-c6")
    node.delete(our_list, our_path, "k8sxtp-c6")
    node.delete(ref_list, ref_path, "k8sxtp-c6")
    assert "CNI-" not in node.nat() and "CNI-" not in node.sh("ip6tables-save", "-t", "nat")


def test_kube_flannel_shape_at_031_with_portmap(node):
    """kube-flannel.yml's list (0.3.1, flannel + portmap): DEL gets no prevResult, portmap still cleans up."""
    subnet_env = os.path.join(node.dir, "subnet.env")
    with open(subnet_env, "w") as fh:
        fh.write(FLANNEL_ENV.replace("10.198.9.1", "10.198.15.1"))
    conflist = {"name": "k8sxtp-cbr0", "cniVersion": "0.3.1", "plugins": [
        {"type": "k8sx-flannel", "subnetFile": subnet_env, "dataDir": os.path.join(node.dir, "flannel"),
         "ipam": {"dataDir": node.data_dir}, "delegate": {"bridge": unique("pcni"), "isDefaultGateway": True}},
        {"type": "k8sx-portmap", "capabilities": {"portMappings": True}}]}
    cap = {"portMappings": [{"hostPort": 18095, "containerPort": 80, "protocol": "tcp"}]}
    pod, path = node.pod()
    result = node.add(conflist, path, "k8sxtp-k1", cap=cap)
    assert result["cniVersion"] == "0.3.1"
    assert result["ips"] == [{"version": "4", "interface": 2, "address": "10.198.15.2/24", "gateway": "10.198.15.1"}]
    from k8sx.net.iptables import chain_name

    dn = chain_name("CNI-DN-", "k8sxtp-cbr0", "k8sxtp-k1")
    assert f"-A {dn} -p tcp -m tcp --dport 18095 -j DNAT --to-destination 10.198.15.2:80" in node.nat()
    node.delete(conflist, path, "k8sxtp-k1", cap=cap)
    assert dn not in node.nat() and pod_addrs(pod) == []
    node.delete(conflist, path, "k8sxtp-k1", cap=cap)


def test_bridge_options_mtu_promisc_mac_and_l2_only(node):
    def opts(prefix: str, name: str, subnet: str, l2: bool = False) -> dict:
        conflist = node.bridge_list(prefix, name, unique("pbr"), subnet)
        plugin = conflist["plugins"][0]
        plugin.update(mtu=1400, promiscMode=True, hairpinMode=False, capabilities={"mac": True})
        if l2:
            del plugin["ipam"]
            plugin["ipMasq"] = plugin["isGateway"] = False
        return conflist

    cap = {"mac": "0a:58:0a:c6:12:05"}
    for l2 in (False, True):
        ref_list = opts("", "k8sxtp-refo", "10.198.18.0/24", l2)
        our_list = opts("k8sx-", "k8sxtp-ouro", "10.198.19.0/24", l2)
        (_, ref_path), (our_pod, our_path) = node.pod(), node.pod()
        ref = node.add(ref_list, ref_path, "k8sxtp-o1", cap=cap)
        ours = node.add(our_list, our_path, "k8sxtp-o1", cap=cap)
        assert shape(ours) == shape(ref)
        assert ours["interfaces"][2]["mac"] == ref["interfaces"][2]["mac"] == cap["mac"]
        bridge = our_list["plugins"][0]["bridge"]
        br_show = node.sh("ip", "link", "show", "dev", bridge)
        assert "PROMISC" in br_show and "mtu 1400" in br_show
        pod_show = subprocess.run(["ip", "-n", our_pod, "link", "show", "eth0"], capture_output=True, text=True).stdout
        assert "mtu 1400" in pod_show and cap["mac"] in pod_show and "UP" in pod_show
        node.delete(our_list, our_path, "k8sxtp-o1", cap=cap)
        node.delete(ref_list, ref_path, "k8sxtp-o1", cap=cap)


def test_loopback_alone_same_result_as_reference(node):
    (ref_pod, ref_path), (our_pod, our_path) = node.pod(), node.pod()
    for pod in (ref_pod, our_pod):
        subprocess.run(["ip", "-n", pod, "link", "set", "lo", "down"], check=True)
    ref_list = {"cniVersion": "1.0.0", "name": "k8sxtp-lo", "plugins": [{"type": "loopback"}]}
    our_list = {"cniVersion": "1.0.0", "name": "k8sxtp-lo", "plugins": [{"type": "k8sx-loopback"}]}
    ref = node.add(ref_list, ref_path, "k8sxtp-l1")
    ours = node.add(our_list, our_path, "k8sxtp-l1")
    ref["interfaces"][0]["sandbox"] = our_path
    assert ours == ref and list(ours) == list(ref)
    assert ping(our_pod, "127.0.0.1")
    node.check(our_list, our_path, "k8sxtp-l1")
    node.delete(our_list, our_path, "k8sxtp-l1")
    assert not ping(our_pod, "127.0.0.1")
    node.delete(ref_list, ref_path, "k8sxtp-l1")
