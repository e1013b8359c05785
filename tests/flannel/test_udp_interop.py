"""The udp backend's two forwarders on one wire: C (offloads, UDP GSO/GRO) and Python (a datagram
per packet, no offloads, as flanneld's own proxy reads and writes them).

What this proves: the C forwarder's segmentation and merging stay invisible on the wire, since a
node whose forwarder handles exactly one IP packet per datagram exchanges megabytes of TCP with
it, intact, both ways; and pods behind two Python forwarders reach each other too.
"""

from __future__ import annotations

import os

import pytest

from flannel.fcluster import cluster

pytestmark = pytest.mark.root


def test_c_and_python_forwarders_interoperate() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    python = {"K8SX_FLANNEL_UDP_PROXY": "python"}
    with cluster({"Type": "udp"}, agent_env={2: python, 3: python}) as c:
        assert "udp forwarder (C)" in c.nodes[0].log_text()
        assert "udp forwarder (Python)" in c.nodes[2].log_text()
        fast, slow, slow2 = (n.pods[0] for n in c.nodes)
        data = os.urandom(2 << 20)
        assert fast.tcp_to(slow, port=8081, payload=data) == data
        assert slow.tcp_to(fast, port=8082, payload=data) == data
        assert slow.ping(slow2.ip) and slow2.tcp_to(slow) == b"k8sxtf-hello"
