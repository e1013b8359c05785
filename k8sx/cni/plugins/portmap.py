"""portmap: forward host ports to a pod with DNAT, like the reference plugin (chained after bridge).

Why its own implementation: the same configuration (``portMappings`` capability, ``snat``,
``markMasqBit``, ``externalSetMarkChain``, ``conditionsV4``/``conditionsV6``) and the same chains
(``CNI-HOSTPORT-DNAT``, ``-SETMARK``, ``-MASQ``, per-container ``CNI-DN-<hash>``), so either plugin
can remove the other's rules, but each call is one ``iptables-restore`` in the common case instead
of dozens of ``iptables`` execs; and a CHECK that works (the reference v1.1.1 checks IPv6 chains
of IPv4-only pods and fails).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from k8sx.cni.skel import CmdArgs
from k8sx.cni.types import ERR_INTERNAL, ERR_INVALID_NETWORK_CONFIG, ERR_PLUGIN_NOT_AVAILABLE, CNIError, convert_result
from k8sx.net import iptables, sysctl
from k8sx.net.link import NetError, Netlink, netlink_at_if_present

TOP_DNAT = "CNI-HOSTPORT-DNAT"
SETMARK = "CNI-HOSTPORT-SETMARK"
MASQ = "CNI-HOSTPORT-MASQ"
MASQ_COMMENT = "CNI portfwd requiring masquerade"
SETMARK_COMMENT = "CNI portfwd masquerade mark"
_SLOW_PATH_TRIES = 3


@dataclass
class Mapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: str


class Conf:
    def __init__(self, args: CmdArgs) -> None:
        self.name = args.name
        if not self.name:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, "invalid network config: missing 'name'")
        snat = args.require("snat", bool, True)
        self.snat = True if snat is None else snat
        bit = args.require("markMasqBit", int, 13)
        self.external_setmark = args.require("externalSetMarkChain", str, None)
        if self.external_setmark and "markMasqBit" in args.conf:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, "Cannot specify externalSetMarkChain and markMasqBit")
        if not 0 <= bit <= 31:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"MasqMarkBit must be between 0 and 31, got {bit}")
        self.mark = f"{1 << bit:#x}/{1 << bit:#x}"
        self.conditions = {4: args.require("conditionsV4", list, None), 6: args.require("conditionsV6", list, None)}
        self.mappings = _mappings(args.runtime_config.get("portMappings"))
        self.setmark_chain = self.external_setmark or SETMARK


def _mappings(raw: Any) -> list[Mapping]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "runtimeConfig.portMappings must be a list")
    out = []
    for pm in raw:
        if not isinstance(pm, dict):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, "every port mapping must be an object")
        hp, cp = pm.get("hostPort"), pm.get("containerPort")
        if not isinstance(cp, int) or isinstance(cp, bool) or not 0 < cp < 65536:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"Invalid container port number: {cp}")
        if not isinstance(hp, int) or isinstance(hp, bool) or not 0 < hp < 65536:
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"Invalid host port number: {hp}")
        proto = str(pm.get("protocol") or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"Invalid protocol {proto!r}")
        host_ip = str(pm.get("hostIP") or "")
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"Invalid hostIP {host_ip!r}") from None
        out.append(Mapping(hp, cp, proto, host_ip))
    return out


def _container_ips(args: CmdArgs) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The pod's address per family, from prevResult (interfaces in the sandbox named CNI_IFNAME)."""
    prev = args.prev_result
    if prev is None:
        return {}
    res = convert_result(prev, "1.1.0")
    ifaces = res.get("interfaces") or []
    out: dict[int, Any] = {}
    for ipc in res.get("ips") or []:
        idx = ipc.get("interface")
        if isinstance(idx, int) and 0 <= idx < len(ifaces) and (
                ifaces[idx].get("name") != args.ifname or not ifaces[idx].get("sandbox")):
            continue
        addr = ipaddress.ip_interface(ipc["address"])
        out.setdefault(addr.version, addr)
    return out


def dnat_chain(conf: Conf, container_id: str) -> str:
    return iptables.chain_name("CNI-DN-", conf.name, container_id)


def _entry_rules(conf: Conf, container_id: str, family: int) -> list[list[str]]:
    """The jumps from CNI-HOSTPORT-DNAT into the pod's chain: per protocol, up to 15 ports each."""
    comment = f"dnat name: {iptables.go_quote(conf.name)} id: {iptables.go_quote(container_id)}"[:256]
    chain = dnat_chain(conf, container_id)
    by_proto: dict[str, list[str]] = {}
    for m in _family_mappings(conf, family):
        ports = by_proto.setdefault(m.protocol, [])
        if str(m.host_port) not in ports:
            ports.append(str(m.host_port))
    rules = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for i in range(0, len(ports), 15):
            rules.append(["-p", proto, "-m", "comment", "--comment", comment, "-m", "multiport",
                          "--dports", ",".join(ports[i:i + 15]), "-j", chain])
    return rules


def _family_mappings(conf: Conf, family: int) -> list[Mapping]:
    return [m for m in conf.mappings if not m.host_ip or ipaddress.ip_address(m.host_ip).version == family]


def _dnat_rules(conf: Conf, family: int, ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[list[str]]:
    rules = []
    for m in _family_mappings(conf, family):
        base = ["-p", m.protocol, "-m", m.protocol, "--dport", str(m.host_port)]
        if m.host_ip and not ipaddress.ip_address(m.host_ip).is_unspecified:
            base = ["-d", str(ipaddress.ip_network(m.host_ip)), *base]  # as iptables-save prints it
        if conf.snat:
            rules.append(["-s", str(ip.network), *base, "-j", conf.setmark_chain])
            if family == 4:
                rules.append(["-s", "127.0.0.1/32", *base, "-j", conf.setmark_chain])
        dest = f"{ip.ip}:{m.container_port}" if family == 4 else f"[{ip.ip}]:{m.container_port}"
        rules.append([*base, "-j", "DNAT", "--to-destination", dest])
    return rules


def _toplevel(conf: Conf, family: int) -> dict[str, tuple[list[list[str]], list[tuple[str, list[str]]]]]:
    """chain -> (its rules, [(entry chain, jump rule)]) for the shared chains."""
    cond = conf.conditions[family] or ["-m", "addrtype", "--dst-type", "LOCAL"]
    out: dict[str, Any] = {TOP_DNAT: ([], [("PREROUTING", [*cond, "-j", TOP_DNAT]),
                                          ("OUTPUT", [*cond, "-j", TOP_DNAT])])}
    if conf.snat and not conf.external_setmark:
        out[SETMARK] = ([["-m", "comment", "--comment", SETMARK_COMMENT, "-j", "MARK", "--set-xmark", conf.mark]], [])
        out[MASQ] = ([["-m", "mark", "--mark", conf.mark, "-j", "MASQUERADE"]],
                     [("POSTROUTING", ["-m", "comment", "--comment", MASQ_COMMENT, "-j", MASQ])])
    return out


def _pod_lines(conf: Conf, args: CmdArgs, family: int, ip: Any) -> list[str]:
    chain = dnat_chain(conf, args.container_id)
    lines = [iptables.rule("-A", chain, *r) for r in _dnat_rules(conf, family, ip)]
    lines += [iptables.rule("-A", TOP_DNAT, *r) for r in _entry_rules(conf, args.container_id, family)]
    return lines


def _same_rule(saved: list[str], a: list[str]) -> bool:
    """Whether saved rule args (``-A CHAIN ...``) match ``a`` ignoring order of option pairs."""
    return sorted(saved[2:]) == sorted(a)


def _forward(conf: Conf, args: CmdArgs, family: int, ip: Any) -> None:
    chain = dnat_chain(conf, args.container_id)
    try:  # the shared chains exist after the first pod: one exec
        iptables.restore("nat", _pod_lines(conf, args, family, ip), family, chains=[chain])
        return
    except iptables.IptablesError:
        pass
    last: Exception | None = None
    for _ in range(_SLOW_PATH_TRIES):  # create what is missing; "-N" fails if another call won the race
        saved = iptables.save("nat", family)
        have = iptables.chains(saved)
        lines = []
        for name, (rules, entries) in _toplevel(conf, family).items():
            if name not in have:
                lines.append(f"-N {name}")
                lines += [iptables.rule("-A", name, *r) for r in rules]
            for entry_chain, jump in entries:
                if not any(_same_rule(r, jump) for r in iptables.rules(saved, entry_chain)):
                    lines.append(iptables.rule("-A", entry_chain, *jump))
        try:
            iptables.restore("nat", lines + _pod_lines(conf, args, family, ip), family, chains=[chain])
            return
        except iptables.IptablesError as exc:
            last = exc
    raise CNIError(ERR_INTERNAL, f"portmap: cannot program {family == 6 and 'ip6' or 'ip'}tables", str(last))


def _unforward(conf: Conf, container_id: str, family: int) -> None:
    chain = dnat_chain(conf, container_id)
    entries = _entry_rules(conf, container_id, family)
    if entries:
        lines = [iptables.rule("-D", TOP_DNAT, *r) for r in entries] + [f"-F {chain}", f"-X {chain}"]
        try:
            iptables.restore("nat", lines, family)
            return
        except iptables.IptablesError:
            pass
    try:
        saved = iptables.save("nat", family)
    except iptables.IptablesError:
        return
    lines = [iptables.rule("-D", *r[1:]) for r in iptables.rules(saved, TOP_DNAT) if r[-2:] == ["-j", chain]]
    if chain in iptables.chains(saved):
        lines += [f"-F {chain}", f"-X {chain}"]
    if lines:
        iptables.restore("nat", lines, family)


def _localnet(ip: ipaddress.IPv4Interface) -> None:
    """route_localnet on the host interface towards the pod, so 127.0.0.1:hostPort can be DNATed."""
    with Netlink() as nl:
        oif = nl.route_oif(str(ip.ip))
        link = nl.link(index=oif) if oif else None
    if link is not None:
        sysctl.write_iface("ipv4", link.name, "route_localnet", "1")


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    conf = Conf(args)
    prev = args.prev_result
    if prev is None:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "must be called as chained plugin")
    if not conf.mappings:
        return prev
    ips = _container_ips(args)
    try:
        for family, ip in sorted(ips.items()):
            if family == 4 and conf.snat:
                _localnet(ip)
            _forward(conf, args, family, ip)
    except (NetError, iptables.IptablesError) as exc:
        raise CNIError(ERR_INTERNAL, f"portmap: {exc.strerror or exc}") from None
    return prev


def _families_for_del(args: CmdArgs) -> list[int]:
    ips = _container_ips(args)
    if ips:
        return sorted(ips)
    if args.netns:  # still attached: ask the pod's interface
        try:
            with netlink_at_if_present(args.netns) as nl:
                link = nl.link(args.ifname) if nl is not None else None
                if link is not None:
                    fams = sorted({a.version for a in nl.addresses(link.index) if not a.ip.is_link_local})
                    if fams:
                        return fams
        except NetError:
            pass
    return [4, 6] if os.path.exists("/proc/net/if_inet6") else [4]


def cmd_del(args: CmdArgs) -> None:
    conf = Conf(args)
    try:
        for family in _families_for_del(args):
            _unforward(conf, args.container_id, family)
    except iptables.IptablesError as exc:
        raise CNIError(ERR_INTERNAL, f"portmap: {exc.strerror or exc}") from None


def cmd_check(args: CmdArgs) -> None:
    conf = Conf(args)
    if args.prev_result is None:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "must be called as chained plugin")
    if not conf.mappings:
        return
    chain = dnat_chain(conf, args.container_id)
    for family, ip in sorted(_container_ips(args).items()):
        saved = iptables.save("nat", family)
        if chain not in iptables.chains(saved):
            raise CNIError(ERR_INTERNAL, f"could not check {'ipv6' if family == 6 else 'ipv4'} dnat: "
                           f"chain {chain} not found in iptables table nat")
        have = iptables.rules(saved, chain)
        for want in _dnat_rules(conf, family, ip):
            if want[-2] == "--to-destination" and not any(r[-2:] == want[-2:] and _same_rule(r, want) for r in have):
                raise CNIError(ERR_INTERNAL, f"portmap: DNAT rule to {want[-1]} missing in {chain}")
        jumps = iptables.rules(saved, TOP_DNAT)
        for want in _entry_rules(conf, args.container_id, family):
            if not any(_same_rule(r, want) for r in jumps):
                raise CNIError(ERR_INTERNAL, f"portmap: jump to {chain} missing in {TOP_DNAT}")
        for entry_chain, jump in _toplevel(conf, family)[TOP_DNAT][1]:
            if not any(_same_rule(r, jump) for r in iptables.rules(saved, entry_chain)):
                raise CNIError(ERR_INTERNAL, f"portmap: jump to {TOP_DNAT} missing in {entry_chain}")


def cmd_status(args: CmdArgs) -> None:
    if not iptables.available(4):
        raise CNIError(ERR_PLUGIN_NOT_AVAILABLE, "portmap: iptables is not usable")


def cmd_gc(args: CmdArgs) -> None:
    """Remove the DNAT chains of this network's attachments that are not among the valid ones."""
    conf = Conf(args)
    valid = args.conf.get("cni.dev/valid-attachments") or []
    keep = {dnat_chain(conf, a.get("containerID", "")) for a in valid if isinstance(a, dict)}
    prefix = f"dnat name: {iptables.go_quote(conf.name)} id: "
    for family in (4, 6) if os.path.exists("/proc/net/if_inet6") else (4,):
        try:
            saved = iptables.save("nat", family)
        except iptables.IptablesError:
            continue
        stale = set()
        for r in iptables.rules(saved, TOP_DNAT):
            if "--comment" in r and r[r.index("--comment") + 1].startswith(prefix) and r[-2] == "-j" \
                    and r[-1] not in keep:
                stale.add(r[-1])
        lines = [iptables.rule("-D", *r[1:]) for r in iptables.rules(saved, TOP_DNAT) if r[-1] in stale]
        lines += [x for c in sorted(stale) if c in iptables.chains(saved) for x in (f"-F {c}", f"-X {c}")]
        if lines:
            iptables.restore("nat", lines, family)
