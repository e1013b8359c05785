"""Subnet leases as flanneld models them: the lease attributes (its JSON in etcd), the key format,
subnet allocation, and ``subnet.env``.

Why one module: the etcd, Kubernetes and local stores and the agent all speak these types, and the
bytes they write (the ``LeaseAttrs`` JSON, ``10.244.1.0-24`` keys, the four ``FLANNEL_*`` lines) must
be exactly flanneld's so that k8sx and flanneld nodes can share one cluster.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from k8sx.errors import K8sxError
from k8sx.flannel.config import NetConfig

SUBNET_TTL = 24 * 3600  # flanneld's subnetTTL


@dataclass(frozen=True)
class LeaseAttrs:
    """flannel's ``lease.LeaseAttrs``: who holds a subnet and how to reach it."""

    public_ip: str
    backend_type: str = ""
    backend_data: Any = None

    def to_json(self) -> str:
        """Go's ``json.Marshal`` of LeaseAttrs: field order kept, empty BackendType/BackendData omitted."""
        doc: dict[str, Any] = {"PublicIP": self.public_ip, "PublicIPv6": None}
        if self.backend_type:
            doc["BackendType"] = self.backend_type
        if self.backend_data is not None:
            doc["BackendData"] = self.backend_data
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> LeaseAttrs:
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("PublicIP"), str):
            raise ValueError("lease attributes without PublicIP")
        return cls(public_ip=doc["PublicIP"], backend_type=doc.get("BackendType") or "",
                   backend_data=doc.get("BackendData"))


@dataclass(frozen=True)
class Lease:
    subnet: ipaddress.IPv4Network
    attrs: LeaseAttrs
    expiration: float = 0.0  # unix time; 0 = unknown
    handle: Any = field(default=None, compare=False)  # the store's own reference (etcd lease id, ...)

    @property
    def key(self) -> str:
        return subnet_key(self.subnet)

    def remaining(self) -> float:
        return self.expiration - time.time() if self.expiration else float("inf")


@dataclass(frozen=True)
class Event:
    """A change in the set of leases: ``added`` (new or changed) or ``removed`` (deleted or expired)."""

    kind: str
    lease: Lease


def subnet_key(subnet: ipaddress.IPv4Network) -> str:
    """``10.244.1.0-24``: the last element of flanneld's etcd key for a subnet."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key(key: str) -> ipaddress.IPv4Network | None:
    """The subnet of ``10.244.1.0-24`` (a dual-stack ``&<ipv6>`` part is ignored); None if malformed."""
    head = key.rsplit("/", 1)[-1].split("&", 1)[0]
    addr, sep, plen = head.rpartition("-")
    if not sep:
        return None
    try:
        return ipaddress.IPv4Network(f"{addr}/{plen}")
    except ValueError:
        return None


def allocate(config: NetConfig, taken: Iterable[ipaddress.IPv4Network],
             rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A free subnet: random among the first 100 free ones between SubnetMin and SubnetMax (flanneld's rule)."""
    used = set(taken)
    size = 1 << (32 - config.subnet_len)
    free = []
    addr = int(config.subnet_min)
    while addr <= int(config.subnet_max) and len(free) < 100:
        sn = ipaddress.IPv4Network(f"{ipaddress.IPv4Address(addr)}/{config.subnet_len}")
        if not any(sn.overlaps(u) for u in used):
            free.append(sn)
        addr += size
    if not free:
        raise K8sxError(f"out of subnets: every /{config.subnet_len} of {config.network} between "
                        f"{config.subnet_min} and {config.subnet_max} is leased")
    return (rng or random).choice(free)


# subnet.env ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SubnetEnv:
    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Network
    mtu: int
    ipmasq: bool


def render_subnet_env(env: SubnetEnv) -> str:
    gw = env.subnet.network_address + 1
    return (f"FLANNEL_NETWORK={env.network}\nFLANNEL_SUBNET={gw}/{env.subnet.prefixlen}\n"
            f"FLANNEL_MTU={env.mtu}\nFLANNEL_IPMASQ={'true' if env.ipmasq else 'false'}\n")


def write_subnet_env(path: str, env: SubnetEnv) -> None:
    """Write atomically (a temp file renamed over), as flanneld does."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as fh:
        fh.write(render_subnet_env(env))
    os.rename(tmp, path)


def read_subnet_env(path: str) -> SubnetEnv | None:
    """The previous run's subnet.env (to reuse its subnet and clean its rules); None if absent/unreadable."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    kv = dict(line.strip().split("=", 1) for line in lines if "=" in line)
    try:
        return SubnetEnv(network=ipaddress.IPv4Network(kv["FLANNEL_NETWORK"]),
                         subnet=ipaddress.IPv4Interface(kv["FLANNEL_SUBNET"]).network,
                         mtu=int(kv.get("FLANNEL_MTU", "0")), ipmasq=kv.get("FLANNEL_IPMASQ") == "true")
    except (KeyError, ValueError):
        return None


def describe_leases(leases: Iterable[Lease]) -> list[dict[str, Any]]:
    """Leases as plain rows (``k8sx flannel leases``): key, subnet, attributes, expiry when known."""
    out = []
    for lease in sorted(leases, key=lambda x: x.subnet):
        exp = lease.expiration
        out.append({"key": lease.key, "subnet": str(lease.subnet), "publicIP": lease.attrs.public_ip,
                    "backendType": lease.attrs.backend_type, "backendData": lease.attrs.backend_data,
                    "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp)) if exp else None})
    return out
