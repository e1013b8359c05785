"""flanneld's masquerade (``--ip-masq``) and forward rules, kept in place like flanneld's traffic manager.

Why its own module: the rules must be byte-for-byte flanneld's (chain names, order, the
``flanneld masq``/``flanneld forward`` comments), so a node can move between flanneld and k8sx and
each cleans up the other's rules; and they are re-checked every few seconds, the whole set
re-applied in order when any rule went missing. Applied as one ``iptables-restore --noflush`` batch.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex

from k8sx.net import iptables

log = logging.getLogger(__name__)

MASQ_CHAIN = "FLANNEL-POSTRTG"
FWD_CHAIN = "FLANNEL-FWD"
MASQ = "flanneld masq"
FWD = "flanneld forward"
KUBE_PROXY_MARK = "0x4000/0x4000"


def masq_rules(network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network,
               fully_random: bool = True) -> list[list[str]]:
    """The nat rules of flanneld's ``MasqRules`` (jump first), as ``iptables-save`` prints them."""
    n, s = str(network), str(subnet)
    c = ["-m", "comment", "--comment", MASQ]
    rnd = ["--random-fully"] if fully_random else []
    return [
        ["-A", "POSTROUTING", *c, "-j", MASQ_CHAIN],
        ["-A", MASQ_CHAIN, "-m", "mark", "--mark", KUBE_PROXY_MARK, *c, "-j", "RETURN"],
        ["-A", MASQ_CHAIN, "-s", s, "-d", n, *c, "-j", "RETURN"],
        ["-A", MASQ_CHAIN, "-s", n, "-d", s, *c, "-j", "RETURN"],
        ["-A", MASQ_CHAIN, "!", "-s", n, "-d", s, *c, "-j", "RETURN"],
        ["-A", MASQ_CHAIN, "-s", n, "!", "-d", "224.0.0.0/4", *c, "-j", "MASQUERADE", *rnd],
        ["-A", MASQ_CHAIN, "!", "-s", n, "-d", n, *c, "-j", "MASQUERADE", *rnd],
    ]


def forward_rules(network: ipaddress.IPv4Network) -> list[list[str]]:
    c = ["-m", "comment", "--comment", FWD]
    return [
        ["-A", "FORWARD", *c, "-j", FWD_CHAIN],
        ["-A", FWD_CHAIN, "-s", str(network), *c, "-j", "ACCEPT"],
        ["-A", FWD_CHAIN, "-d", str(network), *c, "-j", "ACCEPT"],
    ]


def _present(saved: list[str], want: list[list[str]]) -> bool:
    have = iptables.rules(saved)
    return all(rule in have for rule in want)


def _apply(table: str, chain: str, parent: str, want: list[list[str]]) -> None:
    """Delete every jump to ``chain`` from ``parent``, flush ``chain`` and add ``want`` in order."""
    saved = iptables.save(table)
    jump = [r for r in iptables.rules(saved, parent) if r[-2:] == ["-j", chain]]
    lines = [iptables.rule("-D", *r[1:]) for r in jump]
    lines += [iptables.rule(*r) for r in want]
    iptables.restore(table, lines, chains=[chain])


def ensure(table: str, chain: str, parent: str, want: list[list[str]]) -> bool:
    """Make ``want`` present; True when something had to be (re)applied."""
    if _present(iptables.save(table), want):
        return False
    _apply(table, chain, parent, want)
    return True


class TrafficManager:
    """The rules for one lease: applied at start-up and re-checked by :meth:`resync`."""

    def __init__(self, network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, ip_masq: bool,
                 forward: bool = True, fully_random: bool = True) -> None:
        self.sets: list[tuple[str, str, str, list[list[str]]]] = []
        if ip_masq:
            self.sets.append(("nat", MASQ_CHAIN, "POSTROUTING", masq_rules(network, subnet, fully_random)))
        if forward:
            self.sets.append(("filter", FWD_CHAIN, "FORWARD", forward_rules(network)))

    def apply(self) -> None:
        for table, chain, parent, want in self.sets:
            _apply(table, chain, parent, want)

    def resync(self) -> None:
        for table, chain, parent, want in self.sets:
            if ensure(table, chain, parent, want):
                log.info("some %s rules were missing: re-applied the chain %s", table, chain)

    def describe(self) -> list[str]:
        return [shlex.join(r) for _, _, _, want in self.sets for r in want]
