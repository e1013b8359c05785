"""Benchmark: pod-to-pod TCP throughput across nodes per flannel backend, against the limit.

Why: issue 6's targets are relative to two pods on one bridge (the limit, measured in the same run
on the same machine): host-gw >= 0.80, vxlan >= 0.67, udp measured and >= 0.10. Also measured:
the time from a new lease in etcd to its routes on every peer.

For each backend a 3-node cluster of network namespaces is built exactly as the tests build it
(tests/flannel/fcluster.py: an underlay bridge in its own namespace, one etcd there, one
``k8sx flannel run`` per node, pods wired by the flannel CNI plugin). Node 1 has two pods; one
iperf3 TCP stream (``-t`` seconds, one run) goes from node 1's first pod to node 2's pod; the limit is
node 1's first pod to its second pod over the node's bridge (measured in the host-gw cluster, MTU
1500, like the reference's "direct" row). Everything stays in namespaces named k8sxtf... and is
removed. Run as root: ``.venv/bin/python bench/flannel_throughput.py [-t 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from flannel.fcluster import FAKE_IP, cluster, fake_value, peer_programmed

TARGETS = {"host-gw": 0.80, "vxlan": 0.67, "udp": 0.10}


def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: int) -> float:
    """Gbit/s of one iperf3 TCP stream (receiver side)."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip, "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p", "5201",
                              "-t", str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 30)
        doc = json.loads(out.stdout)
        if "error" in doc:
            raise RuntimeError(doc["error"])
        return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.kill()
        srv.wait()


def lease_to_routes(c, subnet: str = "10.244.250.0/24") -> float:
    """Seconds from a new lease's PUT in etcd until every node has programmed it."""
    t0 = time.monotonic()
    c.etcdctl("put", "/coreos.com/network/subnets/" + subnet.replace("/", "-"), fake_value(c.backend))
    pending = list(c.nodes)
    while pending:
        pending = [n for n in pending if not peer_programmed(c, n, subnet, FAKE_IP)]
        if time.monotonic() - t0 > 10:
            raise RuntimeError("the new lease did not reach every node within 10 s")
    took = time.monotonic() - t0
    c.etcdctl("del", "/coreos.com/network/subnets/" + subnet.replace("/", "-"))
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--seconds", type=int, default=10, help="iperf3 duration per measurement")
    ap.add_argument("--backends", default="host-gw,vxlan,udp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces)")
    limit = None
    rows = []
    for backend in args.backends.split(","):
        with cluster({"Type": backend}, pods=1) as c:
            n1, n2 = c.nodes[0], c.nodes[1]
            if limit is None:
                second = n1.add_pod()
                limit = iperf(n1.pods[0].netns, second.netns, second.ip, args.seconds)
                print(f"limit  (two pods on one bridge, mtu 1500): {limit:6.2f} Gbit/s", flush=True)
            gbps = iperf(n1.pods[0].netns, n2.pods[0].netns, n2.pods[0].ip, args.seconds)
            lat = lease_to_routes(c)
            rows.append((backend, gbps, lat))
            print(f"{backend:7s} pod n1 -> pod n2: {gbps:6.2f} Gbit/s  ratio {gbps / limit:.2f} "
                  f"(target >= {TARGETS[backend]:.2f})  new lease -> routes on all 3 nodes: {lat * 1000:.0f} ms",
                  flush=True)
    print("\nbackend  Gbit/s  ratio  target  lease->routes")
    for backend, gbps, lat in rows:
        ok = "ok" if gbps / limit >= TARGETS[backend] else "BELOW"
        print(f"{backend:7s} {gbps:7.2f}  {gbps / limit:5.2f}  {TARGETS[backend]:5.2f} {ok:5s}  {lat * 1000:6.0f} ms")
    print(f"limit   {limit:7.2f}  1.00")


if __name__ == "__main__":
    main()
