"""``k8sx flannel run --kube-subnet-mgr`` against the Kubernetes API emulator (kmock), on 2 netns nodes.

What this proves: the agent takes its subnet from ``spec.podCIDR``, publishes flanneld's annotations
on its own Node (backend-type, backend-data with the VTEP MAC of its flannel.1, public-ip,
kube-subnet-manager), finds its peers among the Nodes carrying them, and pods across the two nodes
reach each other; a Node that appears with flannel's annotations is programmed on both nodes, and
deleting it removes its routes; the node's NetworkUnavailable condition is set False (FlannelIsUp)
as flanneld sets it. The emulator validates nothing and runs no controller (podCIDRs
are set by the test, as kube-controller-manager would).
"""

from __future__ import annotations

import json
import os
import urllib.parse

import pytest
from kubeapi import ApiEmulator, write_kubeconfig

from flannel.fcluster import Cluster, Relay, wait_for
from k8sx.flannel.leases.kube import annotations_for
from k8sx.flannel.subnet import LeaseAttrs

pytestmark = pytest.mark.root
P = "flannel.alpha.coreos.com"


def test_annotation_values_are_flanneld() -> None:
    assert annotations_for(LeaseAttrs("192.168.77.11", "host-gw")) == {
        f"{P}/backend-data": "null", f"{P}/backend-type": "host-gw",
        f"{P}/kube-subnet-manager": "true", f"{P}/public-ip": "192.168.77.11"}
    vx = annotations_for(LeaseAttrs("192.168.77.11", "vxlan", {"VNI": 1, "VtepMAC": "c6:b8:b6:77:90:84"}))
    assert vx[f"{P}/backend-data"] == '{"VNI":1,"VtepMAC":"c6:b8:b6:77:90:84"}'


def _node(name: str, cidr: str, annotations: dict[str, str] | None = None) -> dict:
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {"podCIDR": cidr}}


def test_kube_subnet_manager_end_to_end() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    c = Cluster(2)
    relay = None
    try:
        with ApiEmulator() as api:
            c.start(etcd=False)
            emu = urllib.parse.urlsplit(api.url)
            relay = Relay(c.underlay, ("192.168.77.1", 6443), (emu.hostname, emu.port))
            kubeconfig = write_kubeconfig(os.path.join(c.dir, "kubeconfig"), relay.url)
            netconf = os.path.join(c.dir, "net-conf.json")
            with open(netconf, "w") as fh:
                json.dump({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}, fh)
            names = {}
            for node in c.nodes:
                names[node] = f"k8sxtf-node{node.index}"
                api.create("/api/v1/nodes", _node(names[node], f"10.244.{node.index}.0/24"))
            for node in c.nodes:
                node.start_agent(["--kube-subnet-mgr", "--kubeconfig", kubeconfig, "--node-name", names[node],
                                  "--net-config-file", netconf])
            for node in c.nodes:
                ann = api.request("GET", f"/api/v1/nodes/{names[node]}")["metadata"]["annotations"]
                mac = json.loads(node.ip_("-j", "link", "show", "flannel.1").stdout)[0]["address"]
                assert ann == {f"{P}/backend-data": '{"VNI":1,"VtepMAC":"' + mac + '"}',
                               f"{P}/backend-type": "vxlan", f"{P}/kube-subnet-manager": "true",
                               f"{P}/public-ip": node.ip}
                assert node.subnet_env()["FLANNEL_SUBNET"] == f"10.244.{node.index}.1/24"
                conds = api.request("GET", f"/api/v1/nodes/{names[node]}")["status"]["conditions"]
                assert [(x["type"], x["status"], x["reason"], x["message"]) for x in conds] == \
                    [("NetworkUnavailable", "False", "FlannelIsUp", "Flannel is running on this node")]
            n1, n2 = c.nodes
            wait_for(lambda: "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" in n1.routes(), 10, "n1 -> n2")
            wait_for(lambda: "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in n2.routes(), 10, "n2 -> n1")
            a, b = n1.add_pod(), n2.add_pod()
            assert a.ping(b.ip) and b.ping(a.ip)
            assert a.tcp_to(b) == b"k8sxtf-hello"

            # a third node appears (as flanneld would annotate it), then goes away
            other = annotations_for(LeaseAttrs("192.168.77.99", "vxlan", {"VNI": 1, "VtepMAC": "0a:58:c0:a8:4d:63"}))
            api.create("/api/v1/nodes", _node("k8sxtf-node9", "10.244.9.0/24", other))
            for node in c.nodes:
                wait_for(lambda n=node: "10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink" in n.routes(), 5,
                         f"{node.netns} to program node9")
            api.request("DELETE", "/api/v1/nodes/k8sxtf-node9")
            for node in c.nodes:
                wait_for(lambda n=node: "10.244.9.0/24" not in n.routes(), 5, f"{node.netns} to drop node9")
            r = n1.k8sx("flannel", "leases", "--kube-subnet-mgr", "--kubeconfig", kubeconfig, "-o", "json")
            assert sorted(row["subnet"] for row in json.loads(r.stdout)) == ["10.244.1.0/24", "10.244.2.0/24"]
            # bad input is said plainly: an unknown node, a node without a podCIDR
            base = ["flannel", "run", "--kube-subnet-mgr", "--kubeconfig", kubeconfig, "--net-config-file", netconf,
                    "--iface", n1.iface, "--subnet-file", os.path.join(c.dir, "unused.env")]
            r = n1.k8sx(*base, "--node-name", "k8sxtf-nope", check=False)
            assert r.returncode == 1 and "k8sxtf-nope" in r.stderr and "Traceback" not in r.stderr
            api.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "k8sxtf-bare"}})
            r = n1.k8sx(*base, "--node-name", "k8sxtf-bare", check=False)
            assert r.returncode == 1 and "podCIDR" in r.stderr and "Traceback" not in r.stderr
            for node in c.nodes:
                assert node.stop_agent() == 0
    finally:
        c.close()
        if relay is not None:
            relay.close()
