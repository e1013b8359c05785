"""``k8sx flannel run --lease-file``: one node without etcd or an API server.

What this proves: the local store hands out a subnet from net-conf.json, the agent writes
subnet.env and the masquerade rules, two pods wired by the flannel CNI plugin reach each other,
``k8sx flannel leases`` reads the file, and a restarted agent keeps its subnet.
"""

from __future__ import annotations

import json
import os

import pytest

from flannel.fcluster import Cluster

pytestmark = pytest.mark.root


def test_single_node_with_a_lease_file() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    c = Cluster(1)
    try:
        c.start(etcd=False)
        node = c.nodes[0]
        conf = os.path.join(c.dir, "net-conf.json")
        leases = os.path.join(c.dir, "leases.json")
        with open(conf, "w") as fh:
            json.dump({"Network": "10.250.0.0/16", "SubnetMin": "10.250.7.0", "SubnetMax": "10.250.7.0",
                       "Backend": {"Type": "host-gw"}}, fh)
        args = ["--lease-file", leases, "--net-config-file", conf]
        node.start_agent(args)
        assert node.subnet_env_text() == ("FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=10.250.7.1/24\n"
                                          "FLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n")
        a, b = node.add_pod(), node.add_pod()
        assert a.ping(b.ip) and b.ping(a.ip)
        assert a.tcp_to(b) == b"k8sxtf-hello"
        rows = json.loads(node.k8sx("flannel", "leases", *args, "-o", "json").stdout)
        assert [(r["key"], r["publicIP"], r["backendType"]) for r in rows] == \
            [("10.250.7.0-24", node.ip, "host-gw")] and rows[0]["expires"]
        assert "FLANNEL-POSTRTG" in node.exec("iptables-save", "-t", "nat").stdout
        assert node.stop_agent() == 0
        node.start_agent(args)
        assert node.subnet_env()["FLANNEL_SUBNET"] == "10.250.7.1/24"
        assert node.stop_agent() == 0
        # host-gw cannot work through NAT: a public IP that is not the interface's is refused
        r = node.k8sx("flannel", "run", "--iface", node.iface, "--public-ip", "192.168.77.200", *args,
                      "--subnet-file", node.subnet_file, check=False)
        assert r.returncode == 1 and "192.168.77.200" in r.stderr and "Traceback" not in r.stderr
    finally:
        c.close()
