"""Backends: how a node reaches the other nodes' pod subnets (flanneld's ``backend.Backend``).

Why one interface: the agent does the same things whatever the data path is (make the device and
the lease attributes, configure this node's side, add and remove a peer, re-check periodically,
stop) and one folder per backend (``hostgw``, ``vxlan``, ``udp``) holds what differs. ``expected``
describes the kernel routes a backend should have programmed for a set of peers, which
``k8sx flannel status`` compares with what the kernel holds.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass

from k8sx.errors import K8sxError
from k8sx.flannel.config import NetConfig
from k8sx.flannel.subnet import Lease, LeaseAttrs
from k8sx.net.link import Netlink

MODULES = {"host-gw": "k8sx.flannel.backends.hostgw", "vxlan": "k8sx.flannel.backends.vxlan",
           "udp": "k8sx.flannel.backends.udp"}


@dataclass(frozen=True)
class ExternalInterface:
    """The interface that carries node-to-node traffic (``--iface``) and this node's public IP."""

    name: str
    index: int
    ip: str  # the interface's own IPv4 address
    network: ipaddress.IPv4Network  # its on-link subnet
    mtu: int
    public_ip: str  # --public-ip, else ip


@dataclass(frozen=True)
class ExpectedRoute:
    """A route a backend wants in the main table, for one peer (or the whole Network)."""

    dst: ipaddress.IPv4Network
    gateway: str | None
    dev: str
    onlink: bool = False
    peer: str = ""  # the peer's public IP, "" for a route that serves every peer


class Backend(ABC):
    type: str = ""

    def __init__(self, nl: Netlink, ext: ExternalInterface, config: NetConfig) -> None:
        self.nl = nl
        self.ext = ext
        self.config = config

    @property
    @abstractmethod
    def mtu(self) -> int:
        """The MTU for pods (``FLANNEL_MTU``)."""

    @abstractmethod
    def lease_attrs(self) -> LeaseAttrs:
        """This node's lease attributes; creates the backend's device first where it carries data (vxlan)."""

    @abstractmethod
    def start(self, own: Lease) -> None:
        """Configure this node's side for its lease (device address, local routes, forwarder)."""

    @abstractmethod
    def add_peer(self, lease: Lease) -> None:
        """Program the path to a remote lease (idempotent: also called for changed leases)."""

    @abstractmethod
    def remove_peer(self, lease: Lease) -> None:
        """Remove the path to a lease that was deleted or expired."""

    def resync(self, peers: list[Lease]) -> None:  # noqa: B027  (optional periodic check)
        """Periodic repair (flanneld re-adds missing host-gw routes every 10 s)."""

    def stop(self) -> None:  # noqa: B027
        """Stop userspace parts; kernel state stays (flanneld leaves routes on SIGTERM)."""

    @abstractmethod
    def expected(self, own: Lease | None, peers: list[Lease]) -> list[ExpectedRoute]:
        """The routes this backend programs for ``peers``."""

    def accepts(self, lease: Lease) -> bool:
        """Whether a peer's lease is for this backend (flanneld skips other backend types)."""
        return lease.attrs.backend_type == self.type


def load(config: NetConfig, nl: Netlink, ext: ExternalInterface) -> Backend:
    module = importlib.import_module(MODULES[config.backend_type])
    return module.BACKEND(nl, ext, config)  # type: ignore[no-any-return]


def backend_class(backend_type: str) -> type[Backend]:
    module = importlib.import_module(MODULES[backend_type])
    return module.BACKEND  # type: ignore[no-any-return]


def external_interface(nl: Netlink, iface: str | None, public_ip: str | None) -> ExternalInterface:
    """flanneld's choice: ``--iface`` (a name or one of its IPs), else the default route's interface."""
    link = None
    if iface:
        link = nl.link(iface)
        if link is None:
            try:
                want = ipaddress.ip_address(iface)
            except ValueError:
                raise K8sxError(f"--iface {iface}: no such interface") from None
            for candidate in nl.links():
                if any(a.ip == want for a in nl.addresses(candidate.index, socket.AF_INET)):
                    link = candidate
                    break
            if link is None:
                raise K8sxError(f"--iface {iface}: no interface has that address")
    else:
        idx = _default_route_oif(nl)
        if not idx:
            raise K8sxError("no default route: pass --iface to choose the interface between nodes")
        link = nl.link(index=idx)
        if link is None:
            raise K8sxError("the default route's interface vanished")
    addrs = [a for a in nl.addresses(link.index, socket.AF_INET) if not a.ip.is_link_local]
    if not addrs:
        raise K8sxError(f"interface {link.name} has no IPv4 address")
    addr = addrs[0]
    if iface:
        for a in addrs:
            if str(a.ip) == iface:
                addr = a
    return ExternalInterface(name=link.name, index=link.index, ip=str(addr.ip), network=addr.network,
                             mtu=link.mtu, public_ip=public_ip or str(addr.ip))


def _default_route_oif(nl: Netlink) -> int:
    try:
        return nl.route_oif("1.1.1.1")  # a lookup only: no packet is sent
    except OSError:
        return 0
