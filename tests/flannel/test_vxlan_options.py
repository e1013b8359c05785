"""vxlan's backend options on a 3-node cluster: VNI 7, Port 4789 and DirectRouting.

What this proves: the device is ``flannel.7`` with VNI 7 and destination port 4789, the lease
carries ``{"VNI":7,...}``; with DirectRouting, peers on the same L2 subnet get a plain route via
their public IP (no neigh, fdb or flannel.7 route: pods talk without encapsulation) while a peer
on another subnet still gets the vxlan neigh + fdb + onlink route; ``status`` expects exactly that;
a deleted device is recreated with its MAC and entries (flanneld's device watcher).
"""

from __future__ import annotations

import json
import os

import pytest

from flannel.fcluster import cluster, subnet_of, wait_for

pytestmark = pytest.mark.root


def test_vni_port_and_direct_routing() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    with cluster({"Type": "vxlan", "VNI": 7, "Port": 4789, "DirectRouting": True}) as c:
        n1 = c.nodes[0]
        dev = json.loads(n1.ip_("-d", "-j", "link", "show", "flannel.7").stdout)[0]
        data = dev["linkinfo"]["info_data"]
        assert (data["id"], data["port"], dev["mtu"]) == (7, 4789, 1450)
        value = json.loads(c.subnets()[f"/coreos.com/network/subnets/{subnet_of(n1).replace('/', '-')}"]["value"])
        assert value["BackendData"] == {"VNI": 7, "VtepMAC": dev["address"]}
        routes = n1.routes()
        for other in c.nodes[1:]:
            assert f"{subnet_of(other)} via {other.ip} dev {n1.iface} \n" in routes
        assert "flannel.7" not in routes
        assert n1.ip_("neigh", "show", "dev", "flannel.7").stdout.strip() == ""
        a, b = n1.pods[0], c.nodes[1].pods[0]
        assert a.ping(b.ip) and b.ping(a.ip) and a.tcp_to(b) == b"k8sxtf-hello"

        far = json.dumps({"PublicIP": "10.99.0.5", "PublicIPv6": None, "BackendType": "vxlan",
                          "BackendData": {"VNI": 7, "VtepMAC": "0a:58:0a:63:00:05"}}, separators=(",", ":"))
        c.etcdctl("put", "/coreos.com/network/subnets/10.244.240.0-24", far)
        wait_for(lambda: "10.244.240.0/24 via 10.244.240.0 dev flannel.7 onlink" in n1.routes(), 5, "the far peer")
        assert "10.244.240.0 lladdr 0a:58:0a:63:00:05 PERMANENT" in n1.ip_("neigh", "show", "dev", "flannel.7").stdout
        assert "0a:58:0a:63:00:05 dst 10.99.0.5 self permanent" in \
            os.popen(f"bridge -n {n1.netns} fdb show dev flannel.7").read()
        doc = json.loads(n1.k8sx("flannel", "status", "--iface", n1.iface, "--etcd-endpoints",
                                 "http://192.168.77.1:2379", "--subnet-file", n1.subnet_file, "-o", "json").stdout)
        assert sorted((r["subnet"], r["dev"], r["state"]) for r in doc["routes"]) == sorted(
            [(subnet_of(o), n1.iface, "programmed") for o in c.nodes[1:]]
            + [("10.244.240.0/24", "flannel.7", "programmed")])

        # a prefix without a config, and an endpoint we cannot speak to, are said plainly
        r = n1.k8sx("flannel", "status", "--iface", n1.iface, "--etcd-endpoints", "http://192.168.77.1:2379",
                    "--etcd-prefix", "/k8sxtf/none", "--subnet-file", n1.subnet_file, check=False)
        assert r.returncode == 1 and "no network config in etcd: key /k8sxtf/none/config is missing" in r.stderr
        r = n1.k8sx("flannel", "leases", "--etcd-endpoints", "https://192.168.77.1:2379", check=False)
        assert r.returncode == 1 and "only http://HOST:PORT" in r.stderr and "Traceback" not in r.stderr

        # the device deleted under the agent comes back with its MAC, address and entries
        n1.ip_("link", "del", "flannel.7")
        assert "flannel.7" not in n1.routes()
        wait_for(lambda: "10.244.240.0/24 via 10.244.240.0 dev flannel.7 onlink" in n1.routes(), 13,
                 "the agent to recreate flannel.7 and its entries")
        again = json.loads(n1.ip_("-d", "-j", "link", "show", "flannel.7").stdout)[0]
        assert again["address"] == dev["address"] and again["linkinfo"]["info_data"]["port"] == 4789
        addrs = json.loads(n1.ip_("-j", "addr", "show", "dev", "flannel.7").stdout)[0]["addr_info"]
        assert [a["local"] for a in addrs if a["family"] == "inet"] == [subnet_of(n1).split("/")[0]]
        assert "0a:58:0a:63:00:05 dst 10.99.0.5" in os.popen(f"bridge -n {n1.netns} fdb show dev flannel.7").read()
