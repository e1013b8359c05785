"""host-gw: one route per peer subnet via the peer's public IP, no device, no encapsulation.

Why it is the fast path: packets leave on the external interface unchanged, so it needs every node
on one L2 segment (flanneld refuses a public IP that is not the interface's own: NAT would break it).
"""

from __future__ import annotations

import logging

from k8sx.errors import K8sxError
from k8sx.flannel.backends import Backend, ExpectedRoute
from k8sx.flannel.subnet import Lease, LeaseAttrs

log = logging.getLogger(__name__)


class HostGW(Backend):
    type = "host-gw"

    @property
    def mtu(self) -> int:
        return self.ext.mtu

    def lease_attrs(self) -> LeaseAttrs:
        if self.ext.public_ip != self.ext.ip:
            raise K8sxError(f"host-gw needs the public IP to be the interface's own: {self.ext.public_ip} "
                            f"is not {self.ext.name}'s address {self.ext.ip} (NAT between nodes?)")
        return LeaseAttrs(public_ip=self.ext.public_ip, backend_type=self.type)

    def start(self, own: Lease) -> None:
        pass  # no device: the CNI bridge holds the local subnet

    def _route(self, lease: Lease) -> ExpectedRoute:
        return ExpectedRoute(dst=lease.subnet, gateway=lease.attrs.public_ip, dev=self.ext.name,
                             peer=lease.attrs.public_ip)

    def add_peer(self, lease: Lease) -> None:
        want = self._route(lease)
        for r in self.nl.routes(0):
            if r.dst == want.dst and (r.gateway != want.gateway or r.oif != self.ext.index):
                self.nl.delete_route(r.dst, r.gateway, r.oif)
        self.nl.replace_route(want.dst, want.gateway, self.ext.index)

    def remove_peer(self, lease: Lease) -> None:
        self.nl.delete_route(lease.subnet, oif=self.ext.index)

    def resync(self, peers: list[Lease]) -> None:
        have = {(r.dst, r.gateway) for r in self.nl.routes(self.ext.index)}
        for lease in peers:
            if (lease.subnet, lease.attrs.public_ip) not in have:
                log.info("route to %s via %s was missing: re-adding it", lease.subnet, lease.attrs.public_ip)
                self.add_peer(lease)

    def expected(self, own: Lease | None, peers: list[Lease]) -> list[ExpectedRoute]:
        return [self._route(lease) for lease in peers if self.accepts(lease)]



BACKEND = HostGW
