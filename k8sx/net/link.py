"""Links, addresses and routes over rtnetlink (pyroute2), in the host or in a pod's namespace.

Why this exists: the CNI plugins, the runtime and flannel all need the same handful of netlink
operations (create a bridge, a veth pair straight into a pod's namespace, hairpin, addresses,
routes, delete a link and learn its addresses). One :class:`Netlink` per namespace holds one
socket; the socket is created inside the target namespace by a per-thread ``setns`` (see
:mod:`k8sx.net.ns`), which avoids pyroute2's fork per namespace. pyroute2 is imported lazily, so
importing this module costs nothing until a socket is opened.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from k8sx.net import ns

IFF_UP = 0x1
IFF_PROMISC = 0x100
RTPROT_BOOT = 3
RTNH_F_ONLINK = 0x4
NUD_PERMANENT = 0x80
NTF_SELF = 0x2
AF_BRIDGE = 7
NETLINK_ROUTE = 0

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetError(OSError):
    """A netlink request failed; ``errno`` is the kernel's answer (EEXIST, ENODEV, ...)."""


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    master: int
    flags: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gateway: str | None
    oif: int
    onlink: bool = False


def _link(msg: Any) -> Link:
    kind = ""
    info = msg.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
    return Link(index=msg["index"], name=msg.get_attr("IFLA_IFNAME"), kind=kind,
                mac=msg.get_attr("IFLA_ADDRESS") or "", mtu=msg.get_attr("IFLA_MTU") or 0,
                master=msg.get_attr("IFLA_MASTER") or 0, flags=msg["flags"])


@contextmanager
def netlink_at_if_present(path: str) -> Iterator[Netlink | None]:
    """A Netlink inside the namespace at ``path``, or None when that namespace is gone.

    For teardown paths (CNI DEL and friends) that must succeed after the pod's namespace was deleted.
    """
    try:
        fd = ns.open_netns(path)
    except ns.NetnsNotFound:
        yield None
        return
    try:
        with Netlink(fd) as nl:
            yield nl
    finally:
        os.close(fd)


class Netlink:
    """An rtnetlink connection bound to one network namespace (fd), or to the caller's."""

    def __init__(self, netns_fd: int | None = None) -> None:
        from pyroute2 import IPRoute

        if netns_fd is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        else:
            with ns.entered(netns_fd):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        self._ipr = IPRoute(fileno=sock.detach())

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            yield
        except NetlinkError as exc:
            raise NetError(exc.code, f"{what}: {exc.args[1] if len(exc.args) > 1 else exc}") from None

    # links ---------------------------------------------------------------------------------------
    def link(self, name: str | None = None, index: int | None = None) -> Link | None:
        """The link by name or index, or None."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            msgs = self._ipr.get_links(index) if index is not None else self._ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise NetError(exc.code, f"get link {name or index}: {exc}") from None
        return _link(msgs[0]) if msgs else None

    def links(self) -> list[Link]:
        with self._errors("list links"):
            return [_link(m) for m in self._ipr.get_links()]

    def ensure_bridge(self, name: str, mtu: int = 0, promisc: bool = False,
                      vlan_filtering: bool = False) -> Link:
        """The bridge ``name``, created and set up if missing; an existing non-bridge is an error."""
        br = self.link(name)
        if br is None:
            spec: dict[str, Any] = {"ifname": name, "kind": "bridge"}
            if mtu:
                spec["mtu"] = mtu
            if vlan_filtering:
                spec["br_vlan_filtering"] = 1
            try:
                with self._errors(f"create bridge {name}"):
                    self._ipr.link("add", **spec)
            except NetError as exc:  # a concurrent ADD created it first
                if exc.errno != errno.EEXIST:
                    raise
            br = self.link(name)
            if br is None:
                raise NetError(errno.ENODEV, f"bridge {name} vanished after creation")
        if br.kind != "bridge":
            raise NetError(errno.EEXIST, f"{name!r} already exists but is not a bridge")
        mask = IFF_UP | (IFF_PROMISC if promisc else 0)
        if br.flags & mask != mask:
            with self._errors(f"set bridge {name} up"):
                self._ipr.link("set", index=br.index, flags=mask, change=mask)
            br = self.link(index=br.index) or br
        return br

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int = 0, master: int = 0,
                 peer_mac: str | None = None) -> Link:
        """A veth pair: ``name`` here (up, enslaved to ``master``), ``peer`` created in the pod's netns."""
        peer_spec: dict[str, Any] = {"ifname": peer, "net_ns_fd": peer_netns_fd}
        spec: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": peer_spec, "state": "up"}
        if mtu:
            spec["mtu"] = mtu
            peer_spec["mtu"] = mtu
        if peer_mac:
            peer_spec["address"] = peer_mac
        if master:
            spec["master"] = master
        with self._errors(f"create veth {name}/{peer}"):
            self._ipr.link("add", **spec)
        host = self.link(name)
        if host is None:
            raise NetError(errno.ENODEV, f"veth {name} vanished after creation")
        return host

    def set_hairpin(self, index: int, on: bool = True) -> None:
        with self._errors("set hairpin"):
            self._ipr.brport("set", index=index, mode=1 if on else 0)

    def hairpin(self, index: int) -> bool:
        with self._errors("get bridge port"):
            msgs = self._ipr.brport("show", index=index)
        for msg in msgs:
            info = msg.get_attr("IFLA_PROTINFO")
            if info is not None:
                return bool(info.get_attr("IFLA_BRPORT_MODE"))
        return False

    def set_up(self, index: int, up: bool = True) -> None:
        with self._errors("set link state"):
            self._ipr.link("set", index=index, state="up" if up else "down")

    def delete_link(self, index: int) -> None:
        with self._errors("delete link"):
            self._ipr.link("del", index=index)

    # addresses -----------------------------------------------------------------------------------
    def addresses(self, index: int, family: int = 0) -> list[IPInterface]:
        with self._errors("list addresses"):
            msgs = self._ipr.get_addr(index=index, family=family) if family else self._ipr.get_addr(index=index)
        return [ipaddress.ip_interface(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}") for m in msgs]

    def add_address(self, index: int, addr: IPInterface) -> None:
        with self._errors(f"add address {addr}"):
            self._ipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)

    # routes --------------------------------------------------------------------------------------
    def add_route(self, dst: IPNetwork, gateway: str | None, oif: int) -> None:
        spec: dict[str, Any] = {"dst": str(dst), "oif": oif, "proto": RTPROT_BOOT}
        if dst.version == 6:
            spec["family"] = socket.AF_INET6
        if gateway:
            spec["gateway"] = gateway
        else:
            spec["scope"] = 253  # link
        with self._errors(f"add route {dst}"):
            self._ipr.route("add", **spec)

    def routes(self, oif: int, family: int = socket.AF_INET) -> list[Route]:
        with self._errors("list routes"):
            msgs = self._ipr.get_routes(family=family, oif=oif, table=254)
        out = []
        for m in msgs:
            dst = m.get_attr("RTA_DST")
            zero = "0.0.0.0" if family == socket.AF_INET else "::"
            out.append(Route(dst=ipaddress.ip_network(f"{dst or zero}/{m['dst_len']}"),
                             gateway=m.get_attr("RTA_GATEWAY"), oif=m.get_attr("RTA_OIF") or 0,
                             onlink=bool(m["flags"] & RTNH_F_ONLINK)))
        return out

    def route_oif(self, dst: str) -> int:
        """The outgoing interface index the kernel picks for ``dst`` (``ip route get``)."""
        with self._errors(f"route get {dst}"):
            msgs = self._ipr.route("get", dst=dst)
        return msgs[0].get_attr("RTA_OIF") if msgs else 0

    # overlays (flannel): vxlan devices, routes replaced in place, neighbours and fdb entries ------
    def add_vxlan(self, name: str, vni: int, link: int, local: str, port: int, mtu: int, mac: str,
                  learning: bool = False, gbp: bool = False) -> Link:
        """A vxlan device as ``ip link add NAME mtu M type vxlan id VNI local IP dev LINK dstport P``."""
        spec: dict[str, Any] = {"ifname": name, "kind": "vxlan", "vxlan_id": vni, "vxlan_link": link,
                                "vxlan_local": local, "vxlan_port": port, "vxlan_learning": int(learning),
                                "mtu": mtu, "address": mac}
        if gbp:
            spec["vxlan_gbp"] = True
        with self._errors(f"create vxlan {name}"):
            self._ipr.link("add", **spec)
        created = self.link(name)
        if created is None:
            raise NetError(errno.ENODEV, f"vxlan {name} vanished after creation")
        return created

    def vxlan_info(self, index: int) -> dict[str, Any]:
        """The vxlan attributes of a device: ``id``, ``local``, ``link``, ``port``, ``learning``."""
        with self._errors("get vxlan"):
            msg = self._ipr.get_links(index)[0]
        info = msg.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        if data is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return {}
        return {"id": data.get_attr("IFLA_VXLAN_ID"), "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                "link": data.get_attr("IFLA_VXLAN_LINK") or 0, "port": data.get_attr("IFLA_VXLAN_PORT"),
                "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING"))}

    def set_mtu(self, index: int, mtu: int) -> None:
        with self._errors("set mtu"):
            self._ipr.link("set", index=index, mtu=mtu)

    def delete_address(self, index: int, addr: IPInterface) -> None:
        with self._errors(f"delete address {addr}"):
            self._ipr.addr("del", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)

    def replace_route(self, dst: IPNetwork, gateway: str | None, oif: int, onlink: bool = False,
                      scope: int | None = None) -> None:
        """``ip route replace DST [via GW] dev OIF [onlink]`` (proto boot, main table).

        Without a gateway the scope is link, as ``ip route`` makes it, unless ``scope`` says otherwise
        (0 = universe, what a bare netlink RouteAdd gives).
        """
        spec: dict[str, Any] = {"dst": str(dst), "oif": oif, "proto": RTPROT_BOOT}
        if gateway:
            spec["gateway"] = gateway
        if scope is not None:
            spec["scope"] = scope
        elif not gateway:
            spec["scope"] = 253
        if onlink:
            spec["flags"] = RTNH_F_ONLINK
        with self._errors(f"replace route {dst}"):
            self._ipr.route("replace", **spec)

    def delete_route(self, dst: IPNetwork, gateway: str | None = None, oif: int = 0) -> bool:
        """Delete the route to ``dst`` (matching gateway/oif when given); False if there was none."""
        spec: dict[str, Any] = {"dst": str(dst)}
        if gateway:
            spec["gateway"] = gateway
        if oif:
            spec["oif"] = oif
        try:
            with self._errors(f"delete route {dst}"):
                self._ipr.route("del", **spec)
        except NetError as exc:
            if exc.errno == errno.ESRCH:
                return False
            raise
        return True

    def set_neigh(self, index: int, ip: str, mac: str) -> None:
        """``ip neigh replace IP lladdr MAC dev INDEX nud permanent``."""
        with self._errors(f"set neighbour {ip}"):
            self._ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)

    def delete_neigh(self, index: int, ip: str, mac: str) -> None:
        with self._errors(f"delete neighbour {ip}"):
            self._ipr.neigh("del", dst=ip, lladdr=mac, ifindex=index)

    def neighbours(self, index: int) -> list[tuple[str, str, int]]:
        """(ip, mac, state) of the IPv4 neighbour entries on a link."""
        with self._errors("list neighbours"):
            msgs = self._ipr.get_neighbours(socket.AF_INET, ifindex=index)
        return [(m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR") or "", m["state"]) for m in msgs]

    def set_fdb(self, index: int, mac: str, dst: str) -> None:
        """``bridge fdb replace MAC dev INDEX dst DST self permanent``."""
        with self._errors(f"set fdb {mac}"):
            self._ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)

    def delete_fdb(self, index: int, mac: str, dst: str) -> None:
        with self._errors(f"delete fdb {mac}"):
            self._ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)

    def fdb(self, index: int) -> list[tuple[str, str]]:
        """(mac, dst) of the fdb entries with a remote destination on a (vxlan) link."""
        with self._errors("list fdb"):
            msgs = self._ipr.get_neighbours(AF_BRIDGE, ifindex=index)
        return [(m.get_attr("NDA_LLADDR") or "", m.get_attr("NDA_DST")) for m in msgs if m.get_attr("NDA_DST")]
