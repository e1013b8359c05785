"""``k8sx flannel run`` on a 3-node cluster of network namespaces with one real etcd, per backend.

What this proves, for host-gw, vxlan and udp alike: pods on different nodes (wired by our flannel
CNI plugin from the agent's subnet.env) reach each other both ways by ping and TCP, without
masquerading; each node holds exactly the kernel state flanneld programs (routes, the vxlan device
and its neigh/fdb entries, the TUN device), flanneld's iptables rules and subnet.env; the etcd keys,
values and 24 h leases are flanneld's byte for byte; a new lease reaches every peer within a
second and an expired one takes its routes away; etcd going away leaves the data path alone and
the agents recover when it returns; SIGTERM leaves the routes in place and a restarted agent
keeps its subnet. One cluster per backend is shared by the tests of that backend (they run in
file order and each leaves the cluster as it found it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from support import bin_path

from flannel.fcluster import (
    FAKE_IP,
    FAKE_MAC,
    NETWORK,
    Cluster,
    cluster,
    fake_value,
    peer_gone,
    peer_programmed,
    subnet_of,
    wait_converged,
    wait_for,
)

pytestmark = pytest.mark.root

BACKENDS = {"host-gw": {"Type": "host-gw"}, "vxlan": {"Type": "vxlan"}, "udp": {"Type": "udp"}}


@pytest.fixture(scope="module", params=list(BACKENDS))
def fc(request: pytest.FixtureRequest):
    if os.geteuid() != 0:
        pytest.fail("flannel cluster tests need root; run the suite as root")
    with cluster(BACKENDS[request.param]) as c:
        assert c.backend == request.param
        yield c


# reachability ---------------------------------------------------------------------------------------

def test_pods_on_different_nodes_reach_each_other(fc: Cluster) -> None:
    pods = [n.pods[0] for n in fc.nodes]
    for a, b in ((pods[0], pods[1]), (pods[1], pods[2]), (pods[2], pods[0])):
        assert a.ping(b.ip), f"{a.ip} -> {b.ip}"
        assert b.ping(a.ip), f"{b.ip} -> {a.ip}"
        assert a.tcp_to(b) == b"k8sxtf-hello"
        assert b.tcp_to(a) == b"k8sxtf-hello"


def test_pods_get_the_backend_mtu(fc: Cluster) -> None:
    want = {"host-gw": 1500, "vxlan": 1450, "udp": 1472}[fc.backend]
    pod = fc.nodes[0].pods[0]
    out = os.popen(f"ip -n {pod.netns} -j link show eth0").read()
    assert json.loads(out)[0]["mtu"] == want


# flanneld's state ------------------------------------------------------------------------------------

def test_subnet_env_is_flanneld_format(fc: Cluster) -> None:
    mtu = {"host-gw": 1500, "vxlan": 1450, "udp": 1472}[fc.backend]
    subnets = set()
    for node in fc.nodes:
        with open(node.subnet_file) as fh:
            text = fh.read()
        sn = subnet_of(node)
        subnets.add(sn)
        gw = sn.replace(".0/24", ".1/24")
        assert text == f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={gw}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n"
    assert len(subnets) == 3


def test_etcd_keys_values_and_ttl_are_flanneld_shape(fc: Cluster) -> None:
    raw = fc.subnets()
    assert len(raw) == 3
    for node in fc.nodes:
        sn = subnet_of(node)
        key = f"/coreos.com/network/subnets/{sn.replace('/', '-')}"
        assert key in raw, raw
        value = raw[key]["value"]
        if fc.backend == "vxlan":
            mac = json.loads(node.ip_("-j", "link", "show", "flannel.1").stdout)[0]["address"]
            assert value == ('{"PublicIP":"' + node.ip + '","PublicIPv6":null,"BackendType":"vxlan",'
                             '"BackendData":{"VNI":1,"VtepMAC":"' + mac + '"}}')
        elif fc.backend == "host-gw":
            assert value == '{"PublicIP":"' + node.ip + '","PublicIPv6":null,"BackendType":"host-gw"}'
        else:
            assert value == '{"PublicIP":"' + node.ip + '","PublicIPv6":null}'
        ttl = fc.etcdctl("lease", "timetolive", format(raw[key]["lease"], "x")).stdout
        m = re.search(r"granted with TTL\((\d+)s\), remaining\((\d+)s\)", ttl)
        assert m and m.group(1) == "86400" and 86000 < int(m.group(2)) <= 86400, ttl


def test_kernel_state_is_flanneld(fc: Cluster) -> None:
    backend = fc.backend
    for node in fc.nodes:
        sn = subnet_of(node)
        others = [o for o in fc.nodes if o is not node]
        routes = node.routes()
        links = {x["ifname"]: x for x in json.loads(node.ip_("-d", "-j", "link", "show").stdout)}
        if backend == "host-gw":
            assert not any(n.startswith("flannel") for n in links)
            for o in others:
                assert f"{subnet_of(o)} via {o.ip} dev {node.iface} \n" in routes
        elif backend == "vxlan":
            dev = links["flannel.1"]
            data = dev["linkinfo"]["info_data"]
            assert dev["linkinfo"]["info_kind"] == "vxlan"
            assert (data["id"], data["local"], data["link"], data["port"], data["learning"]) == \
                (1, node.ip, node.iface, 8472, False)
            assert dev["mtu"] == 1450
            addrs = json.loads(node.ip_("-j", "addr", "show", "dev", "flannel.1").stdout)[0]["addr_info"]
            assert [(a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"] == \
                [(sn.split("/")[0], 32)]
            neigh = node.ip_("neigh", "show", "dev", "flannel.1").stdout
            fdb = os.popen(f"bridge -n {node.netns} fdb show dev flannel.1").read()
            for o in others:
                osn = subnet_of(o)
                omac = json.loads(o.ip_("-j", "link", "show", "flannel.1").stdout)[0]["address"]
                gw = osn.split("/")[0]
                assert f"{osn} via {gw} dev flannel.1 onlink \n" in routes
                assert f"{gw} lladdr {omac} PERMANENT" in neigh
                assert f"{omac} dst {o.ip} self permanent" in fdb
        else:
            dev = links["flannel0"]
            assert dev["linkinfo"]["info_kind"] == "tun" and dev["mtu"] == 1472
            addrs = json.loads(node.ip_("-j", "addr", "show", "dev", "flannel0").stdout)[0]["addr_info"]
            assert [(a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"] == \
                [(sn.split("/")[0], 32)]
            assert f"{NETWORK} dev flannel0 \n" in routes  # scope universe: ip prints no scope
            sockets = node.exec("ss", "-Hnlu").stdout
            assert f"{node.ip}:8285" in sockets


def test_iptables_rules_are_flanneld(fc: Cluster) -> None:
    for node in fc.nodes:
        sn = subnet_of(node)
        nat = node.exec("iptables-save", "-t", "nat").stdout.splitlines()
        flt = node.exec("iptables-save", "-t", "filter").stdout.splitlines()
        c = '-m comment --comment "flanneld masq"'
        want_nat = [
            f"-A POSTROUTING {c} -j FLANNEL-POSTRTG",
            f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {sn} -d {NETWORK} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {NETWORK} -d {sn} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {NETWORK} -d {sn} {c} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {NETWORK} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
            f"-A FLANNEL-POSTRTG ! -s {NETWORK} -d {NETWORK} {c} -j MASQUERADE --random-fully",
        ]
        assert [line for line in nat if "flanneld" in line] == want_nat
        f = '-m comment --comment "flanneld forward"'
        assert [line for line in flt if "flanneld" in line] == [
            f"-A FORWARD {f} -j FLANNEL-FWD",
            f"-A FLANNEL-FWD -s {NETWORK} {f} -j ACCEPT",
            f"-A FLANNEL-FWD -d {NETWORK} {f} -j ACCEPT",
        ]


def test_deleted_rules_come_back(fc: Cluster) -> None:
    node = fc.nodes[0]
    node.exec("iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")
    wait_for(lambda: "FLANNEL-POSTRTG -m mark" in node.exec("iptables-save", "-t", "nat").stdout, 8,
             "the masquerade rules to be re-applied")
    assert node.exec("iptables-save", "-t", "nat").stdout.count("-j FLANNEL-POSTRTG") == 1


def test_status_shows_every_route_programmed(fc: Cluster) -> None:
    node = fc.nodes[1]
    r = node.k8sx("flannel", "status", "--iface", node.iface, "--etcd-endpoints", "http://192.168.77.1:2379",
                  "--subnet-file", node.subnet_file, "-o", "json")
    doc = json.loads(r.stdout)
    assert doc["node"]["subnet"] == subnet_of(node) and doc["node"]["publicIP"] == node.ip
    assert sorted(p["publicIP"] for p in doc["peers"]) == sorted(o.ip for o in fc.nodes if o is not node)
    assert doc["routes"] and all(r["state"] == "programmed" for r in doc["routes"])
    table = node.k8sx("flannel", "status", "--iface", node.iface, "--etcd-endpoints", "http://192.168.77.1:2379",
                      "--subnet-file", node.subnet_file).stdout
    assert "programmed" in table and subnet_of(node) in table


def test_status_reports_a_missing_route(fc: Cluster) -> None:
    node, peer = fc.nodes[0], fc.nodes[1]
    status = [bin_path("k8sx"), "flannel", "status", "--iface", node.iface, "--etcd-endpoints",
              "http://192.168.77.1:2379", "--subnet-file", node.subnet_file, "-o", "json"]
    victim = NETWORK if fc.backend == "udp" else subnet_of(peer)
    saved = [line for line in node.routes().splitlines() if line.startswith(victim + " ")]
    assert len(saved) == 1
    node.ip_("route", "del", victim)
    r = node.exec(*status, check=False)
    assert r.returncode == 1
    rows = {row["subnet"]: row["state"] for row in json.loads(r.stdout)["routes"]}
    assert rows[victim] == "missing"
    if fc.backend == "host-gw":  # flanneld's 10 s route check puts it back
        wait_for(lambda: victim in node.routes(), 13, "host-gw's route check to re-add the route")
    else:
        args = saved[0].split()
        node.ip_("route", "add", *args, *([] if "scope" in args else ["scope", "global"]))
    assert node.exec(*status).returncode == 0


def test_leases_command_lists_the_store(fc: Cluster) -> None:
    r = fc.nodes[0].k8sx("flannel", "leases", "--etcd-endpoints", "http://192.168.77.1:2379", "-o", "json")
    rows = json.loads(r.stdout)
    assert sorted(row["subnet"] for row in rows) == sorted(subnet_of(n) for n in fc.nodes)
    assert {row["publicIP"] for row in rows} == {n.ip for n in fc.nodes}
    assert all(row["expires"] for row in rows)  # from each etcd lease's time to live
    yaml_out = fc.nodes[0].k8sx("flannel", "leases", "--etcd-endpoints", "http://192.168.77.1:2379",
                                "-o", "yaml").stdout
    assert "publicIP: 192.168.77.11" in yaml_out


# lease life cycle ------------------------------------------------------------------------------------

def _grant(c: Cluster, ttl: int) -> str:
    out = c.etcdctl("lease", "grant", str(ttl)).stdout
    return out.split()[1]


def test_new_lease_reaches_every_peer_and_expiry_removes_it(fc: Cluster) -> None:
    subnet = "10.244.250.0/24"
    lease = _grant(fc, 3)
    t0 = time.monotonic()
    fc.etcdctl("put", "--lease", lease, "/coreos.com/network/subnets/10.244.250.0-24", fake_value(fc.backend))
    for node in fc.nodes:
        wait_for(lambda n=node: peer_programmed(fc, n, subnet, FAKE_IP), 5, f"{node.netns} to program {subnet}")
    took = time.monotonic() - t0
    assert took < 1.5, f"the new lease took {took:.2f}s to reach every peer"
    # the etcd lease runs out (nobody renews it): every node drops the routes
    for node in fc.nodes:
        wait_for(lambda n=node: peer_gone(fc, n, subnet), 10, f"{node.netns} to drop {subnet}")
    if fc.backend == "vxlan":
        for node in fc.nodes:
            assert "10.244.250.0 " not in node.ip_("neigh", "show", "dev", "flannel.1").stdout
            assert FAKE_MAC not in os.popen(f"bridge -n {node.netns} fdb show dev flannel.1").read()
    assert fc.nodes[0].pods[0].ping(fc.nodes[1].pods[0].ip)


def test_etcd_restart_keeps_routes_and_agents_recover(fc: Cluster) -> None:
    before = [n.routes() for n in fc.nodes]
    fc.stop_etcd()
    for node in fc.nodes:
        wait_for(lambda n=node: "unreachable" in n.log_text(), 10, f"{node.netns} to say etcd is unreachable")
    assert [n.routes() for n in fc.nodes] == before
    a, b = fc.nodes[0].pods[0], fc.nodes[2].pods[0]
    assert a.ping(b.ip) and b.ping(a.ip)  # the data path does not need the store
    # an agent starting while the store is down says so and keeps trying
    late = fc.nodes[2]
    assert late.stop_agent() == 0
    late.start_agent(wait=False)
    wait_for(lambda: "reading the network config: etcd unreachable" in late.log_text(), 10,
             "the starting agent to say etcd is unreachable")
    fc.start_etcd()
    for node in fc.nodes[:2]:
        wait_for(lambda n=node: "reachable again" in n.log_text(), 15, f"{node.netns} to recover")
    wait_for(lambda: "running" in late.log_text(), 15, "the late agent to start once etcd is back")
    wait_converged(fc)
    subnet = "10.244.251.0/24"
    fc.etcdctl("put", "/coreos.com/network/subnets/10.244.251.0-24", fake_value(fc.backend, "192.168.77.98"))
    for node in fc.nodes:
        wait_for(lambda n=node: peer_programmed(fc, n, subnet, "192.168.77.98"), 5, f"{node.netns}: {subnet}")
    fc.etcdctl("del", "/coreos.com/network/subnets/10.244.251.0-24")
    for node in fc.nodes:
        wait_for(lambda n=node: peer_gone(fc, n, subnet), 5, f"{node.netns} to drop {subnet}")


def test_sigterm_leaves_routes_and_restart_keeps_the_subnet(fc: Cluster) -> None:
    node = fc.nodes[2]
    subnet = subnet_of(node)
    env_before = node.subnet_env_text()
    routes_before = node.routes()
    assert node.stop_agent(signal.SIGTERM) == 0
    assert "routes and devices left in place" in node.log_text()
    if fc.backend != "udp":  # flanneld's TUN device (and its route) dies with the process
        assert node.routes() == routes_before
        assert node.pods[0].ping(fc.nodes[0].pods[0].ip)
    # the lease stays in etcd and the peers keep their routes to this node
    assert f"/coreos.com/network/subnets/{subnet.replace('/', '-')}" in fc.subnets()
    for other in fc.nodes[:2]:
        assert peer_programmed(fc, other, subnet, node.ip)
    mac = None
    if fc.backend == "vxlan":
        mac = json.loads(node.ip_("-j", "link", "show", "flannel.1").stdout)[0]["address"]
    key = f"/coreos.com/network/subnets/{subnet.replace('/', '-')}"
    old = fc.subnets()[key]
    # a renew margin of nearly the whole TTL makes the agent renew every second
    node.start_agent(["--subnet-lease-renew-margin", "1439.99"])
    wait_converged(fc)
    wait_for(lambda: "renewed" in node.log_text(), 5, "a lease renewal")
    new = fc.subnets()[key]
    assert new["value"] == old["value"] and new["lease"] != old["lease"]
    assert "TTL(86400s)" in fc.etcdctl("lease", "timetolive", format(new["lease"], "x")).stdout
    assert node.subnet_env_text() == env_before
    if mac is not None:
        assert json.loads(node.ip_("-j", "link", "show", "flannel.1").stdout)[0]["address"] == mac
    assert node.pods[0].ping(fc.nodes[0].pods[0].ip) and node.pods[0].tcp_to(fc.nodes[1].pods[0])


def test_bulk_tcp_transfer_arrives_intact(fc: Cluster) -> None:
    """Megabytes both ways: segmentation (vxlan's and udp's offloads) must neither lose nor corrupt data."""
    data = os.urandom(4 << 20)
    a, b = fc.nodes[0].pods[0], fc.nodes[1].pods[0]
    assert a.tcp_to(b, port=8081, payload=data) == data
    assert b.tcp_to(a, port=8082, payload=data) == data


def test_own_lease_deleted_stops_the_agent(fc: Cluster) -> None:
    """flanneld shuts down when its own lease is revoked; so does the agent (exit 1, said clearly)."""
    node = fc.nodes[1]
    key = f"/coreos.com/network/subnets/{subnet_of(node).replace('/', '-')}"
    fc.etcdctl("del", key)
    wait_for(lambda: node.agent is not None and node.agent.poll() is not None, 10, "the agent to stop")
    assert node.agent is not None and node.agent.returncode == 1
    assert "this node's lease" in node.log_text() and "removed from the store" in node.log_text()
    node.start_agent()  # it takes its subnet back (subnet.env remembers it)
    assert key in fc.subnets()
