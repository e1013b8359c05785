"""vxlan: a ``flannel.<VNI>`` device; per peer a permanent neighbour, an fdb entry and an onlink route.

Why this order and shape: it is flanneld's (``pkg/backend/vxlan``): the peer's VTEP MAC travels in
the lease (``BackendData {"VNI","VtepMAC"}``), the ARP entry comes before the fdb entry and both
before the route (else the kernel would ARP for the gateway), no L2/L3-miss notifications are
used, and with DirectRouting a peer on the same L2 subnet gets a plain route via its public IP.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os

from k8sx.flannel.backends import Backend, ExpectedRoute
from k8sx.flannel.subnet import Lease, LeaseAttrs
from k8sx.net import sysctl
from k8sx.net.link import NetError

log = logging.getLogger(__name__)
ENCAP_OVERHEAD = 50
DEFAULT_PORT = 8472  # the kernel's default when flanneld passes Port 0


def random_mac() -> str:
    """A random locally administered unicast MAC, as flanneld gives each VTEP."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


class Vxlan(Backend):
    type = "vxlan"
    index = 0  # flannel.<VNI>'s ifindex and MAC, known once lease_attrs() made the device
    mac = ""

    @property
    def vni(self) -> int:
        return int(self.config.option("VNI", 1))

    @property
    def device(self) -> str:
        return f"flannel.{self.vni}"

    @property
    def mtu(self) -> int:
        return int(self.config.option("MTU", 0) or self.ext.mtu) - ENCAP_OVERHEAD

    def _ensure_device(self) -> tuple[int, str]:
        port = int(self.config.option("Port", 0) or DEFAULT_PORT)
        learning = bool(self.config.option("Learning", False))
        link = self.nl.link(self.device)
        if link is not None:
            info = self.nl.vxlan_info(link.index)
            if (info.get("id") == self.vni and info.get("local") == self.ext.ip and info.get("link") == self.ext.index
                    and info.get("port") == port and info.get("learning") == learning):
                if link.mtu != self.mtu:
                    self.nl.set_mtu(link.index, self.mtu)
                return link.index, link.mac  # compatible: reused, with its MAC
            log.info("%s exists with another configuration (%s): recreating it", self.device, info)
            self.nl.delete_link(link.index)
        created = self.nl.add_vxlan(self.device, self.vni, self.ext.index, self.ext.ip, port, self.mtu,
                                    random_mac(), learning=learning, gbp=bool(self.config.option("GBP", False)))
        with contextlib.suppress(OSError):  # IPv6 disabled in this namespace
            sysctl.write_iface("ipv6", self.device, "accept_ra", "0")
        return created.index, created.mac

    def lease_attrs(self) -> LeaseAttrs:
        self.index, self.mac = self._ensure_device()
        self.own: Lease | None = None
        return LeaseAttrs(public_ip=self.ext.public_ip, backend_type=self.type,
                          backend_data={"VNI": self.vni, "VtepMAC": self.mac})

    def start(self, own: Lease) -> None:
        self.own = own
        want = ipaddress.IPv4Interface(f"{own.subnet.network_address}/32")
        for addr in self.nl.addresses(self.index, 2):
            if addr != want and addr.ip in self.config.network:
                self.nl.delete_address(self.index, addr)
        if want not in self.nl.addresses(self.index, 2):
            self.nl.add_address(self.index, want)
        self.nl.set_up(self.index)

    def resync(self, peers: list[Lease]) -> None:
        """Recreate a deleted device (with the MAC the lease announces) and its peers' entries, as
        flanneld's device watcher does (flanneld reacts to RTM_DELLINK; this check runs every 10 s)."""
        if self.own is None or self.nl.link(self.device) is not None:
            return
        log.warning("%s was deleted: recreating it with VTEP MAC %s", self.device, self.mac)
        port = int(self.config.option("Port", 0) or DEFAULT_PORT)
        created = self.nl.add_vxlan(self.device, self.vni, self.ext.index, self.ext.ip, port, self.mtu, self.mac,
                                    learning=bool(self.config.option("Learning", False)),
                                    gbp=bool(self.config.option("GBP", False)))
        self.index = created.index
        with contextlib.suppress(OSError):
            sysctl.write_iface("ipv6", self.device, "accept_ra", "0")
        self.start(self.own)
        for lease in peers:
            self.add_peer(lease)

    def _direct(self, lease: Lease) -> bool:
        return bool(self.config.option("DirectRouting", False)) and \
            ipaddress.IPv4Address(lease.attrs.public_ip) in self.ext.network

    def _vtep(self, lease: Lease) -> str | None:
        data = lease.attrs.backend_data
        mac = data.get("VtepMAC") if isinstance(data, dict) else None
        return mac if isinstance(mac, str) and mac else None

    def add_peer(self, lease: Lease) -> None:
        gw = str(lease.subnet.network_address)
        if self._direct(lease):
            self.nl.replace_route(lease.subnet, lease.attrs.public_ip, self.ext.index)
            return
        mac = self._vtep(lease)
        if mac is None:
            log.warning("lease %s of %s has no VtepMAC: skipped", lease.subnet, lease.attrs.public_ip)
            return
        self.nl.set_neigh(self.index, gw, mac)
        try:
            self.nl.set_fdb(self.index, mac, lease.attrs.public_ip)
        except NetError:
            self._quiet(self.nl.delete_neigh, self.index, gw, mac)
            raise
        try:
            self.nl.replace_route(lease.subnet, gw, self.index, onlink=True)
        except NetError:
            self._quiet(self.nl.delete_fdb, self.index, mac, lease.attrs.public_ip)
            self._quiet(self.nl.delete_neigh, self.index, gw, mac)
            raise

    @staticmethod
    def _quiet(fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except NetError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                log.warning("%s", exc)

    def remove_peer(self, lease: Lease) -> None:
        """Delete the route, then the fdb and neighbour entries (the removed lease carries no data,
        so they are found by the subnet's gateway address)."""
        gw = str(lease.subnet.network_address)
        if not self.nl.delete_route(lease.subnet, oif=self.index):
            self.nl.delete_route(lease.subnet, oif=self.ext.index)
        for ip, mac, _ in self.nl.neighbours(self.index):
            if ip == gw:
                for fmac, dst in self.nl.fdb(self.index):
                    if fmac == mac:
                        self._quiet(self.nl.delete_fdb, self.index, fmac, dst)
                self._quiet(self.nl.delete_neigh, self.index, ip, mac)

    def expected(self, own: Lease | None, peers: list[Lease]) -> list[ExpectedRoute]:
        out = []
        for lease in peers:
            if not self.accepts(lease):
                continue
            if self._direct(lease):
                out.append(ExpectedRoute(lease.subnet, lease.attrs.public_ip, self.ext.name,
                                         peer=lease.attrs.public_ip))
            else:
                out.append(ExpectedRoute(lease.subnet, str(lease.subnet.network_address), self.device,
                                         onlink=True, peer=lease.attrs.public_ip))
        return out


BACKEND = Vxlan
