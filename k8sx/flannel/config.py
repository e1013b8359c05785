"""flanneld's network configuration (``net-conf.json`` / the etcd key ``<prefix>/config``), parsed and checked.

Why its own module: every lease store hands the agent the same document, and every mistake in it
(a Network that is not a CIDR, a SubnetLen that does not fit, an unknown backend option) must be
refused before anything touches the kernel, with the offending field named.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from k8sx.errors import K8sxError

BACKENDS = ("udp", "vxlan", "host-gw")
# The options each backend accepts besides Type (flannel's backend config structs).
_BACKEND_OPTIONS: dict[str, dict[str, type]] = {
    "udp": {"Port": int},
    "vxlan": {"VNI": int, "Port": int, "MTU": int, "GBP": bool, "Learning": bool, "DirectRouting": bool,
              "MacPrefix": str},
    "host-gw": {},
}
_TOP = {"Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "EnableIPv4", "EnableIPv6",
        "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables"}


class ConfigError(K8sxError):
    """The network configuration is invalid; the message names the field."""


@dataclass(frozen=True)
class NetConfig:
    network: ipaddress.IPv4Network
    subnet_len: int
    subnet_min: ipaddress.IPv4Address
    subnet_max: ipaddress.IPv4Address
    backend_type: str
    backend: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any) -> Any:
        return self.backend.get(name, default)

    def contains(self, subnet: ipaddress.IPv4Network) -> bool:
        return (subnet.prefixlen == self.subnet_len and subnet.subnet_of(self.network)
                and self.subnet_min <= subnet.network_address <= self.subnet_max)


def _bad(fld: str, why: str) -> ConfigError:
    return ConfigError(f"invalid network config: {fld}: {why}")


def _addr(raw: dict[str, Any], key: str) -> ipaddress.IPv4Address | None:
    if key not in raw:
        return None
    try:
        return ipaddress.IPv4Address(raw[key])
    except (ValueError, TypeError):
        raise _bad(key, f"{raw[key]!r} is not an IPv4 address") from None


def parse(data: str | bytes | dict[str, Any], source: str = "net-conf.json") -> NetConfig:
    """Parse and check a network config as flanneld does (``pkg/subnet/config.go``)."""
    if isinstance(data, dict):
        raw = data
    else:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"invalid network config in {source}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid network config in {source}: not a JSON object")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise _bad(unknown[0], "unknown field")
    if raw.get("EnableIPv6"):
        raise _bad("EnableIPv6", "IPv6 is not supported by k8sx flannel")
    if raw.get("EnableNFTables"):
        raise _bad("EnableNFTables", "nftables mode is not supported by k8sx flannel; use iptables mode")
    if "Network" not in raw:
        raise _bad("Network", "missing")
    try:
        network = ipaddress.IPv4Network(raw["Network"])
    except (ValueError, TypeError):
        raise _bad("Network", f"{raw['Network']!r} is not an IPv4 CIDR with its host bits zero") from None
    sl = raw.get("SubnetLen")
    if sl is None:
        sl = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    if not isinstance(sl, int) or isinstance(sl, bool):
        raise _bad("SubnetLen", f"{sl!r} is not an integer")
    if sl < network.prefixlen or sl > 30:
        raise _bad("SubnetLen", f"{sl} must be between the Network's prefix length ({network.prefixlen}) and 30")
    size = 1 << (32 - sl)
    smin = _addr(raw, "SubnetMin") or network.network_address + size
    smax = _addr(raw, "SubnetMax") or network.broadcast_address - size + 1
    for key, value in (("SubnetMin", smin), ("SubnetMax", smax)):
        if value not in network:
            raise _bad(key, f"{value} is not in Network {network}")
        if int(value) % size:
            raise _bad(key, f"{value} is not on a /{sl} boundary")
    if smin > smax:
        raise _bad("SubnetMin", f"{smin} is above SubnetMax {smax}")
    backend = raw.get("Backend") or {}
    if not isinstance(backend, dict):
        raise _bad("Backend", "not a JSON object")
    btype = backend.get("Type", "udp")
    if btype not in BACKENDS:
        raise _bad("Backend.Type", f"{btype!r} is not one of {', '.join(BACKENDS)}")
    opts = {k: v for k, v in backend.items() if k != "Type"}
    allowed = _BACKEND_OPTIONS[btype]
    for key, value in opts.items():
        if key not in allowed:
            raise _bad(f"Backend.{key}", f"not an option of the {btype} backend")
        want = allowed[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise _bad(f"Backend.{key}", f"{value!r} is not a {want.__name__}")
    if "Port" in opts and not 0 <= opts["Port"] <= 65535:
        raise _bad("Backend.Port", f"{opts['Port']} is not a UDP port")
    if "VNI" in opts and not 0 <= opts["VNI"] < 1 << 24:
        raise _bad("Backend.VNI", f"{opts['VNI']} does not fit in 24 bits")
    if "MTU" in opts and opts["MTU"] and opts["MTU"] < 68 + 50:
        raise _bad("Backend.MTU", f"{opts['MTU']} is too small")
    return NetConfig(network=network, subnet_len=sl, subnet_min=smin, subnet_max=smax, backend_type=btype,
                     backend=opts, raw=raw)


def load_file(path: str) -> NetConfig:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"network config {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read network config {path}: {exc.strerror}") from None
    return parse(data, path)
