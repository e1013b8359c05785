"""What ``k8sx flannel status`` reports: this node's lease, its peers, and the routes the backend
should have programmed next to the ones the kernel actually holds.

Why apart from the agent: it runs as a separate command (in the node's network namespace), reads
the store and the kernel afresh, and computes "expected" with the same backend code the agent uses,
so a missing, stale or foreign route shows up without trusting the agent's own account. (With
udp the per-peer table lives in the agent's forwarder, not the kernel: only its one route for the
whole Network is checked.)
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from k8sx.flannel import backends
from k8sx.flannel.leases import LeaseStore
from k8sx.flannel.subnet import read_subnet_env


def status(store: LeaseStore, subnet_file: str, iface: str | None = None,
           public_ip: str | None = None) -> dict[str, Any]:
    from k8sx.net.link import Netlink

    config = store.network_config()
    leases, _ = store.leases()
    env = read_subnet_env(subnet_file)
    with Netlink() as nl:
        ext = backends.external_interface(nl, iface, public_ip)
        own = next((lease for lease in leases if env is not None and lease.subnet == env.subnet), None)
        if own is None:
            own = next((lease for lease in leases if lease.attrs.public_ip == ext.public_ip), None)
        peers = [lease for lease in leases if own is None or lease.subnet != own.subnet]
        backend = backends.backend_class(config.backend_type)(nl, ext, config)
        expected = backend.expected(own, peers)
        kernel: dict[ipaddress.IPv4Network, list[Any]] = {}
        names = {link.index: link.name for link in nl.links()}
        for idx in {ext.index} | {link.index for link in nl.links() if link.name.startswith("flannel")}:
            for r in nl.routes(idx, socket.AF_INET):
                kernel.setdefault(r.dst, []).append(r)
    rows = []
    for want in expected:
        have = kernel.get(want.dst, [])
        ok = any(r.gateway == want.gateway and names.get(r.oif) == want.dev and r.onlink == want.onlink
                 for r in have)
        state = "programmed" if ok else ("different" if have else "missing")
        rows.append({"subnet": str(want.dst), "peer": want.peer, "via": want.gateway or "", "dev": want.dev,
                     "onlink": want.onlink, "state": state,
                     "kernel": "; ".join(f"via {r.gateway or '-'} dev {names.get(r.oif, r.oif)}"
                                         f"{' onlink' if r.onlink else ''}" for r in have)})
    wanted = {w.dst for w in expected}
    own_net = own.subnet if own else None
    for dst, have in sorted(kernel.items(), key=lambda kv: kv[0]):
        if dst in wanted or dst == own_net or not dst.subnet_of(config.network) or dst == config.network:
            continue
        for r in have:
            rows.append({"subnet": str(dst), "peer": "", "via": r.gateway or "", "dev": names.get(r.oif, r.oif),
                         "onlink": r.onlink, "state": "stale", "kernel": ""})
    return {
        "network": str(config.network),
        "backend": config.backend_type,
        "node": None if own is None else {
            "subnet": str(own.subnet), "publicIP": own.attrs.public_ip, "backendType": own.attrs.backend_type,
            "backendData": own.attrs.backend_data, "mtu": env.mtu if env else None,
            "subnetFile": subnet_file if env else None},
        "peers": [{"subnet": str(p.subnet), "publicIP": p.attrs.public_ip, "backendType": p.attrs.backend_type,
                   "backendData": p.attrs.backend_data} for p in peers],
        "routes": rows,
    }
