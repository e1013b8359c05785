"""udp: a TUN device ``flannel0`` and a userspace forwarder on UDP 8285 (flanneld's slow path).

Why it exists at all: it needs nothing from the kernel but TUN and works across any IP network,
which is why flannel kept it; every packet crosses into userspace twice, so it is measured, not
recommended. The kernel state is flanneld's: the lease's network address as /32 on flannel0, MTU
= external MTU - 28, one route for the whole Network through flannel0; the per-peer table lives
in the forwarder (:mod:`.forwarder`), not in the kernel.
"""

from __future__ import annotations

import ipaddress
import logging
import os

from k8sx.errors import K8sxError
from k8sx.flannel.backends import Backend, ExpectedRoute
from k8sx.flannel.backends.udp.forwarder import Forwarder, NativeForwarder, native_library, open_tun
from k8sx.flannel.subnet import Lease, LeaseAttrs

log = logging.getLogger(__name__)
ENCAP_OVERHEAD = 28  # IPv4 + UDP headers
DEFAULT_PORT = 8285
DEVICE = "flannel0"
PROXY_ENV = "K8SX_FLANNEL_UDP_PROXY"  # "python": use the Python forwarder even where C compiles


class UDP(Backend):
    type = "udp"

    @property
    def port(self) -> int:
        return int(self.config.option("Port", 0) or DEFAULT_PORT)

    @property
    def mtu(self) -> int:
        return self.ext.mtu - ENCAP_OVERHEAD

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self.ext.public_ip)  # flanneld's udp backend sets no BackendType

    def accepts(self, lease: Lease) -> bool:
        return True  # flanneld's udp backend does not look at the peer's BackendType

    def start(self, own: Lease) -> None:
        lib = None if os.environ.get(PROXY_ENV) == "python" else native_library()
        tun_fd, name = open_tun("flannel%d", vnet_hdr=lib is not None)
        link = self.nl.link(name)
        if link is None:
            raise K8sxError(f"the TUN device {name} vanished right after it was opened")
        self.nl.set_mtu(link.index, self.mtu)
        addr = ipaddress.IPv4Interface(f"{own.subnet.network_address}/32")
        if addr not in self.nl.addresses(link.index, 2):
            self.nl.add_address(link.index, addr)
        self.nl.set_up(link.index)
        self.nl.replace_route(self.config.network, None, link.index, scope=0)
        kind = Forwarder if lib is None else lambda *a: NativeForwarder(lib, *a)
        self.forwarder = kind(tun_fd, self.ext.ip, self.port, own.subnet.network_address, self.config.subnet_len)
        self.forwarder.start()
        log.info("udp forwarder (%s): %s <-> %s:%d", "C" if lib else "Python", name, self.ext.ip, self.port)

    def add_peer(self, lease: Lease) -> None:
        self.forwarder.set_route(lease.subnet, lease.attrs.public_ip, self.port)

    def remove_peer(self, lease: Lease) -> None:
        self.forwarder.del_route(lease.subnet)

    def stop(self) -> None:
        if getattr(self, "forwarder", None) is not None:
            self.forwarder.stop()

    def expected(self, own: Lease | None, peers: list[Lease]) -> list[ExpectedRoute]:
        return [ExpectedRoute(self.config.network, None, DEVICE)]


BACKEND = UDP
