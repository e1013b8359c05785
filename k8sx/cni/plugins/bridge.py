"""bridge: attach a pod to a Linux bridge on the node through a veth pair, like the reference plugin.

Why its own implementation: same configuration (``bridge``, ``isGateway``, ``isDefaultGateway``,
``forceAddress``, ``ipMasq``, ``mtu``, ``hairpinMode``, ``promiscMode``, ``ipam``, ``dns``, the
``mac`` capability) and the same result and kernel state as the reference, with far fewer moving
parts per call: the veth is created directly with its peer in the pod's namespace and enslaved in
one netlink request, and ipMasq is one ``iptables-restore`` instead of a dozen ``iptables`` execs.
The masquerade chain and comment are the reference's, so either plugin can clean up the other's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
from typing import Any

from k8sx.cni.skel import CmdArgs
from k8sx.cni.types import (
    ERR_INTERNAL,
    ERR_INVALID_NETWORK_CONFIG,
    ERR_UNKNOWN_CONTAINER,
    ERR_UNSUPPORTED_FIELD,
    CNIError,
    convert_result,
)
from k8sx.net import iptables, ns, sysctl
from k8sx.net.link import Link, NetError, Netlink, netlink_at_if_present

DEFAULT_BRIDGE = "cni0"
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
DEFAULT_ROUTE = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


class Conf:
    """The bridge plugin's netconf, validated."""

    def __init__(self, args: CmdArgs) -> None:
        self.name = args.name
        if not self.name:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, "invalid network config: missing 'name'")
        self.bridge = args.require("bridge", str) or DEFAULT_BRIDGE
        if len(self.bridge) > 15:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"bridge name {self.bridge!r} is longer than 15 characters")
        self.is_default_gw = bool(args.require("isDefaultGateway", bool, False))
        self.is_gw = bool(args.require("isGateway", bool, False)) or self.is_default_gw
        self.force_address = bool(args.require("forceAddress", bool, False))
        self.ip_masq = bool(args.require("ipMasq", bool, False))
        self.hairpin = bool(args.require("hairpinMode", bool, False))
        self.promisc = bool(args.require("promiscMode", bool, False))
        mtu = args.require("mtu", int, 0)
        if mtu < 0 or isinstance(mtu, bool):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"invalid MTU {mtu}")
        self.mtu = mtu
        if self.hairpin and self.promisc:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, "cannot set hairpin mode and promiscuous mode at the same time.")
        if args.require("vlan", int, 0):
            raise CNIError(ERR_UNSUPPORTED_FIELD, "k8sx bridge does not support 'vlan'",
                           "bridge VLAN filtering is not implemented (this kernel lacks it to test against)")
        if args.require("macspoofchk", bool, False):
            raise CNIError(ERR_UNSUPPORTED_FIELD, "k8sx bridge does not support 'macspoofchk'")
        ipam = args.require("ipam", dict, {})
        self.ipam = ipam
        self.ipam_type = ipam.get("type") or ""
        if not isinstance(self.ipam_type, str):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, "invalid network config: ipam 'type' must be a string")
        self.dns = args.require("dns", dict, {})
        self.mac = _requested_mac(args)
        self.enable_dad = bool(args.require("enabledad", bool, False))


def _requested_mac(args: CmdArgs) -> str | None:
    mac = args.runtime_config.get("mac")
    cni = args.conf.get("args")
    if not mac and isinstance(cni, dict) and isinstance(cni.get("cni"), dict):
        mac = cni["cni"].get("mac")
    if not mac:
        mac = args.cni_args().get("MAC")
    return str(mac) if mac else None


def _open_netns(path: str) -> int:
    try:
        return ns.open_netns(path)
    except ns.NetnsNotFound as exc:
        raise CNIError(ERR_UNKNOWN_CONTAINER, str(exc)) from None


def _net_error(exc: NetError) -> CNIError:
    return CNIError(ERR_INTERNAL, str(exc.strerror or exc))


# ipMasq (the reference's SetupIPMasq / TeardownIPMasq, batched) ---------------------------------
def _masq_setup(ips: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface], chain: str, comment: str) -> None:
    for family in (4, 6):
        mine = [ip for ip in ips if ip.version == family]
        if not mine:
            continue
        lines = []
        for ip in mine:
            lines.append(iptables.rule("-A", chain, "-d", str(ip.network), "-m", "comment", "--comment", comment,
                                       "-j", "ACCEPT"))
            lines.append(iptables.rule("-A", chain, "!", "-d", MULTICAST[family], "-m", "comment",
                                       "--comment", comment, "-j", "MASQUERADE"))
        for ip in mine:
            lines.append(iptables.rule("-A", "POSTROUTING", "-s", f"{ip.ip}/{ip.max_prefixlen}", "-m", "comment",
                                       "--comment", comment, "-j", chain))
        iptables.restore("nat", lines, family, chains=[chain])


def _masq_teardown(ips: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface], chain: str, comment: str) -> None:
    """Delete the jumps and the chain in one script; if that fails (or the addresses are unknown,
    e.g. the pod's namespace is gone) read the table and remove whatever is left."""
    for family in (4, 6):
        mine = [ip for ip in ips if ip.version == family]
        if not mine and (ips or family == 6):
            continue
        if mine:
            lines = [iptables.rule("-D", "POSTROUTING", "-s", f"{ip.ip}/{ip.max_prefixlen}", "-m", "comment",
                                   "--comment", comment, "-j", chain) for ip in mine]
            try:
                iptables.restore("nat", [*lines, f"-F {chain}", f"-X {chain}"], family)
                continue
            except iptables.IptablesError:
                pass
        _masq_sweep(chain, family)


def _masq_sweep(chain: str, family: int) -> None:
    """Remove whatever is left of ``chain`` and the jumps to it, reading the table first."""
    try:
        saved = iptables.save("nat", family)
    except iptables.IptablesError:
        return  # no such table / no iptables for this family: nothing of ours can be there
    lines = [iptables.rule("-D", *r[1:]) for r in iptables.rules(saved, "POSTROUTING") if chain in r[2:]]
    if chain in iptables.chains(saved):
        lines += [f"-F {chain}", f"-X {chain}"]
    if lines:
        iptables.restore("nat", lines, family)


# ADD ------------------------------------------------------------------------------------------
def _veth_name() -> str:
    return "veth" + secrets.token_hex(4)


def _gateways(conf: Conf, result: dict[str, Any]) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Fill in missing gateways (subnet's first address) and isDefaultGateway routes; gateway per family."""
    gws: dict[int, Any] = {}
    routes = result.setdefault("routes", [])
    ips = result.get("ips") or []
    for i, ipc in enumerate(ips):  # the reference's key order: interface, address, gateway
        ips[i] = ipc = {"interface": 2, **{k: v for k, v in ipc.items() if k != "interface"}}
        addr = ipaddress.ip_interface(ipc["address"])
        if not ipc.get("gateway") and conf.is_gw:
            ipc["gateway"] = str(addr.network.network_address + 1)
        if not ipc.get("gateway") or addr.version in gws:
            continue
        gw = ipaddress.ip_interface(f"{ipc['gateway']}/{addr.network.prefixlen}")
        gws[addr.version] = gw
        if conf.is_default_gw:
            for r in routes:
                if ipaddress.ip_network(r["dst"], strict=False) == DEFAULT_ROUTE[addr.version] and r.get("gw") \
                        and r["gw"] != str(gw.ip):
                    raise CNIError(ERR_INTERNAL, f"isDefaultGateway ineffective because IPAM sets default route "
                                   f"via {r['gw']}")
            routes.append({"dst": str(DEFAULT_ROUTE[addr.version]), "gw": str(gw.ip)})
    if not routes:
        del result["routes"]
    return gws


def _configure_container(nl: Netlink, netns_fd: int, ifname: str, result: dict[str, Any], dad: bool) -> Link:
    link = nl.link(ifname)
    if link is None:
        raise CNIError(ERR_INTERNAL, f"failed to find interface {ifname} in the container after creating it")
    if not dad and any(":" in ipc["address"] for ipc in result.get("ips") or []):
        with ns.entered(netns_fd):  # as the reference: no DAD, so the address is usable at once
            sysctl.write_iface("ipv6", ifname, "accept_dad", "0")
    gw_by_family: dict[int, str] = {}
    for ipc in result.get("ips") or []:
        addr = ipaddress.ip_interface(ipc["address"])
        nl.add_address(link.index, addr)
        if ipc.get("gateway"):
            gw_by_family[addr.version] = ipc["gateway"]
    nl.set_up(link.index)
    for r in result.get("routes") or []:
        dst = ipaddress.ip_network(r["dst"], strict=False)
        try:
            nl.add_route(dst, r.get("gw") or gw_by_family.get(dst.version), link.index)
        except NetError as exc:
            if exc.errno != 17:  # EEXIST: the first of duplicate routes wins, as in the reference
                raise
    return link


def _ensure_gateway_addr(nl: Netlink, br: Link, gw: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                         force: bool) -> None:
    family = socket.AF_INET if gw.version == 4 else socket.AF_INET6
    for addr in nl.addresses(br.index, family):
        if addr == gw:
            return
        if addr.network.overlaps(gw.network) and addr.version == gw.version and not force and gw.version == 4:
            raise CNIError(ERR_INTERNAL, f"{br.name!r} already has an IP address different from {gw}")
    try:
        nl.add_address(br.index, gw)
    except NetError as exc:
        if exc.errno != 17:
            raise


def _ipam(conf: Conf, args: CmdArgs, command: str) -> dict[str, Any] | None:
    return args.delegate(conf.ipam_type, command, args.stdin)


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    conf = Conf(args)
    cfd = _open_netns(args.netns)
    try:
        host_nl = Netlink()
        cont_nl = Netlink(cfd)
    except BaseException:
        os.close(cfd)
        raise
    created: Link | None = None
    ipam_done = False
    try:
        if cont_nl.link(args.ifname) is not None:
            raise CNIError(ERR_INTERNAL, f"container veth name provided ({args.ifname}) already exists")
        br = host_nl.ensure_bridge(conf.bridge, conf.mtu, conf.promisc)
        for _ in range(5):
            try:
                created = host_nl.add_veth(_veth_name(), args.ifname, cfd, conf.mtu, br.index, conf.mac)
                break
            except NetError as exc:
                if exc.errno != 17:  # EEXIST: the random host name collided; try another
                    raise
        if created is None:
            raise CNIError(ERR_INTERNAL, "could not find a free host veth name")
        if conf.hairpin:
            host_nl.set_hairpin(created.index, True)

        result: dict[str, Any] = {"cniVersion": "1.1.0"}
        if conf.ipam_type:
            ipam_result = _ipam(conf, args, "ADD")
            ipam_done = True
            if not ipam_result or not ipam_result.get("ips") and not ipam_result.get("ip4") \
                    and not ipam_result.get("ip6"):
                raise CNIError(ERR_INTERNAL, "IPAM plugin returned missing IP config")
            ipam_result = convert_result(ipam_result, "1.1.0")
            result["ips"] = ipam_result.get("ips") or []
            if ipam_result.get("routes"):
                result["routes"] = ipam_result["routes"]
            gws = _gateways(conf, result)
            cont = _configure_container(cont_nl, cfd, args.ifname, result, conf.enable_dad)
            if conf.is_gw:
                for gw in gws.values():
                    _ensure_gateway_addr(host_nl, br, gw, conf.force_address)
                if 4 in gws:
                    sysctl.write("net.ipv4.ip_forward", "1")
                if 6 in gws:
                    sysctl.write("net.ipv6.conf.all.forwarding", "1")
            if conf.ip_masq:
                addrs = [ipaddress.ip_interface(i["address"]) for i in result["ips"]]
                _masq_setup(addrs, iptables.chain_name("CNI-", conf.name, args.container_id),
                            iptables.cni_comment(conf.name, args.container_id))
        else:
            cont = cont_nl.link(args.ifname)
            if cont is None:
                raise CNIError(ERR_INTERNAL, f"failed to find interface {args.ifname} after creating it")
            cont_nl.set_up(cont.index)
        br = host_nl.link(index=br.index) or br  # the bridge's MAC follows its ports
        host = host_nl.link(index=created.index) or created
        ordered: dict[str, Any] = {
            "cniVersion": "1.1.0",
            "interfaces": [{"name": br.name, "mac": br.mac}, {"name": host.name, "mac": host.mac},
                           {"name": args.ifname, "mac": cont.mac, "sandbox": args.netns}],
        }
        for key in ("ips", "routes"):
            if key in result:
                ordered[key] = result[key]
        ordered["dns"] = conf.dns
        return ordered
    except BaseException as exc:
        if created is not None:
            with contextlib.suppress(NetError):
                host_nl.delete_link(created.index)
        if ipam_done:
            with contextlib.suppress(CNIError):
                _ipam(conf, args, "DEL")
        if isinstance(exc, NetError):
            raise _net_error(exc) from None
        if isinstance(exc, iptables.IptablesError):
            raise CNIError(ERR_INTERNAL, f"ipMasq: {exc.strerror or exc}") from None
        raise
    finally:
        cont_nl.close()
        host_nl.close()
        os.close(cfd)


# DEL ------------------------------------------------------------------------------------------
def cmd_del(args: CmdArgs) -> None:
    conf = Conf(args)
    if conf.ipam_type:
        _ipam(conf, args, "DEL")
    if not args.netns:
        return
    ips: list[Any] = []
    try:
        with netlink_at_if_present(args.netns) as nl:
            link = nl.link(args.ifname) if nl is not None else None
            if link is not None:
                ips = [a for a in nl.addresses(link.index) if not a.ip.is_link_local]
                nl.delete_link(link.index)
    except NetError as exc:
        raise _net_error(exc) from None
    if conf.ipam_type and conf.ip_masq:
        if not ips and args.prev_result:
            prev = convert_result(args.prev_result, "1.1.0")
            ips = [ipaddress.ip_interface(i["address"]) for i in prev.get("ips") or []]
        try:
            _masq_teardown(ips, iptables.chain_name("CNI-", conf.name, args.container_id),
                           iptables.cni_comment(conf.name, args.container_id))
        except iptables.IptablesError as exc:
            raise CNIError(ERR_INTERNAL, f"ipMasq teardown: {exc.strerror or exc}") from None


# CHECK ----------------------------------------------------------------------------------------
def cmd_check(args: CmdArgs) -> None:
    conf = Conf(args)
    if conf.ipam_type:
        _ipam(conf, args, "CHECK")
    if args.prev_result is None:
        raise CNIError(ERR_INTERNAL, "Required prevResult missing")
    prev = convert_result(args.prev_result, "1.1.0")
    ifaces = prev.get("interfaces") or []
    cont_idx = next((i for i, it in enumerate(ifaces) if it.get("sandbox")), None)
    if cont_idx is None:
        raise CNIError(ERR_INTERNAL, "prevResult has no interface in a sandbox")
    cont_if = ifaces[cont_idx]
    if cont_if.get("name") != args.ifname:
        raise CNIError(ERR_INTERNAL, f"prevResult names interface {cont_if.get('name')}, not {args.ifname}")
    if cont_if.get("sandbox") != args.netns:
        raise CNIError(ERR_INTERNAL, f"Sandbox in prevResult {cont_if.get('sandbox')} doesn't match "
                       f"configured netns: {args.netns}")
    cfd = _open_netns(args.netns)
    try:
        with Netlink() as host_nl, Netlink(cfd) as nl:
            br = host_nl.link(conf.bridge)
            if br is None or br.kind != "bridge":
                raise CNIError(ERR_INTERNAL, f"bridge {conf.bridge} is missing or not a bridge")
            for it in ifaces:
                if not it.get("sandbox") and it.get("name") != conf.bridge:
                    veth = host_nl.link(it.get("name"))
                    if veth is None or veth.master != br.index:
                        raise CNIError(ERR_INTERNAL, f"host interface {it.get('name')} is missing or not on "
                                       f"bridge {conf.bridge}")
            link = nl.link(args.ifname)
            if link is None:
                raise CNIError(ERR_INTERNAL, f"interface {args.ifname} not found in {args.netns}")
            if cont_if.get("mac") and cont_if["mac"].lower() != link.mac.lower():
                raise CNIError(ERR_INTERNAL, f"interface {args.ifname} Mac {cont_if['mac']} doesn't match "
                               f"container Mac: {link.mac}")
            have = set(nl.addresses(link.index))
            for ipc in prev.get("ips") or []:
                if ipc.get("interface", cont_idx) == cont_idx and ipaddress.ip_interface(ipc["address"]) not in have:
                    raise CNIError(ERR_INTERNAL, f"ip {ipc['address']} not found on {args.ifname}")
            routes = {r.dst for fam in (socket.AF_INET, socket.AF_INET6) for r in nl.routes(link.index, fam)}
            for r in prev.get("routes") or []:
                if ipaddress.ip_network(r["dst"], strict=False) not in routes:
                    raise CNIError(ERR_INTERNAL, f"route to {r['dst']} not found in {args.netns}")
    except NetError as exc:
        raise _net_error(exc) from None
    finally:
        os.close(cfd)
    if conf.ip_masq and prev.get("ips"):
        chain = iptables.chain_name("CNI-", conf.name, args.container_id)
        if chain not in iptables.chains(iptables.save("nat")):
            raise CNIError(ERR_INTERNAL, f"ipMasq chain {chain} is missing")


# STATUS / GC ----------------------------------------------------------------------------------
def cmd_status(args: CmdArgs) -> None:
    conf = Conf(args)
    if conf.ipam_type:
        _ipam(conf, args, "STATUS")


def cmd_gc(args: CmdArgs) -> None:
    """Let IPAM collect, then drop the ipMasq chains of this network whose attachment is gone."""
    conf = Conf(args)
    if conf.ipam_type:
        _ipam(conf, args, "GC")
    if not conf.ip_masq:
        return
    valid = args.conf.get("cni.dev/valid-attachments") or []
    keep = {iptables.chain_name("CNI-", conf.name, a.get("containerID", "")) for a in valid if isinstance(a, dict)}
    prefix = f"name: {iptables.go_quote(conf.name)} id: "
    for family in (4, 6):
        try:
            saved = iptables.save("nat", family)
        except iptables.IptablesError:
            continue
        stale = set()
        for r in iptables.rules(saved, "POSTROUTING"):
            if "--comment" in r and r[r.index("--comment") + 1].startswith(prefix) and "-j" in r:
                chain = r[r.index("-j") + 1]
                if chain not in keep:
                    stale.add(chain)
        for chain in sorted(stale):
            _masq_sweep(chain, family)

