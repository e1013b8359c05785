"""host-local IPAM: addresses from configured ranges, recorded as files on the node.

Why its own implementation of a well-known format: the allocation state is the reference
plugin's, byte for byte (one ``O_EXCL`` file per address holding ``<containerID>\\r\\n<ifname>``,
``last_reserved_ip.<set>`` for round-robin, ``flock`` on ``<dir>/lock`` around every allocation and
release), so k8sx's host-local and the Debian one can share a ``dataDir`` without handing out an
address twice. The configuration (``ranges`` of range sets with ``subnet``/``rangeStart``/
``rangeEnd``/``gateway``, the legacy single range, ``routes``, ``dataDir``, ``resolvConf``,
``ipRanges`` and ``ips`` from runtimeConfig, ``IP=`` in CNI_ARGS) is the reference plugin's too.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from k8sx.cni.skel import CmdArgs
from k8sx.cni.types import ERR_INTERNAL, ERR_INVALID_NETWORK_CONFIG, ERR_IO_FAILURE, ERR_PLUGIN_NOT_AVAILABLE, CNIError

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LINE_BREAK = "\r\n"
LAST_IP_PREFIX = "last_reserved_ip."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _bad(msg: str) -> CNIError:
    return CNIError(ERR_INVALID_NETWORK_CONFIG, msg)


@dataclass
class Range:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress | None

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.subnet.version and self.start <= ip <= self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def _parse_range(raw: Any) -> Range:
    if not isinstance(raw, dict) or not isinstance(raw.get("subnet"), str):
        raise _bad("invalid range: every range needs a 'subnet'")
    try:
        subnet = ipaddress.ip_network(raw["subnet"], strict=False)
    except ValueError as exc:
        raise _bad(f"invalid CIDR {raw['subnet']!r}: {exc}") from None
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise _bad(f"network {subnet} too small to allocate from")

    def addr(key: str) -> IPAddress | None:
        value = raw.get(key)
        if value in (None, ""):
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise _bad(f"invalid {key} {value!r}") from None
        if ip not in subnet:
            raise _bad(f"{key} {ip} not in network {subnet}")
        return ip

    first = subnet.network_address + 1
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    start = addr("rangeStart") or first
    end = addr("rangeEnd") or last
    if start > end:
        raise _bad(f"rangeStart {start} is after rangeEnd {end}")
    gateway = addr("gateway") or first
    return Range(subnet=subnet, start=start, end=end, gateway=gateway)


@dataclass
class RangeSet:
    index: int
    ranges: list[Range]

    def range_for(self, ip: IPAddress) -> Range | None:
        return next((r for r in self.ranges if r.contains(ip)), None)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)

    def candidates(self, last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
        """Round-robin as the reference: from ``last``+1 (or the first rangeStart), wrap, stop at start."""
        ridx = 0
        cur: IPAddress | None = None
        if last is not None and self.range_for(last) is not None:
            ridx = next(i for i, r in enumerate(self.ranges) if r.contains(last))
            cur = last
        start: IPAddress | None = None
        while True:
            r = self.ranges[ridx]
            if cur is None:
                cur = r.start
            elif cur == r.end:
                ridx = (ridx + 1) % len(self.ranges)
                r = self.ranges[ridx]
                cur = r.start
            else:
                cur = cur + 1
            if start is None:
                start = cur
            elif cur == start:
                return
            if cur == r.gateway:
                continue
            yield cur, r


@dataclass
class IPAMConfig:
    name: str
    data_dir: str
    range_sets: list[RangeSet]
    routes: list[dict[str, Any]]
    resolv_conf: str
    requested: list[IPAddress]


def load_config(args: CmdArgs) -> IPAMConfig:
    ipam = args.conf.get("ipam")
    if not isinstance(ipam, dict):
        raise _bad("IPAM config missing 'ipam' key")
    name = args.conf.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("invalid network config: missing 'name'")
    raw_sets: list[Any] = []
    if isinstance(ipam.get("subnet"), str):  # the legacy single range at the top of ipam
        raw_sets.append([{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    ip_ranges = args.runtime_config.get("ipRanges")
    ranges = ip_ranges if isinstance(ip_ranges, list) and ip_ranges else ipam.get("ranges") or []
    if not isinstance(ranges, list):
        raise _bad("invalid IPAM config: 'ranges' must be a list of range sets")
    raw_sets.extend(ranges)
    if not raw_sets:
        raise _bad("no IP ranges specified")
    sets = []
    for i, raw in enumerate(raw_sets):
        if not isinstance(raw, list) or not raw:
            raise _bad(f"invalid range set {i}: it must be a non-empty list of ranges")
        rs = RangeSet(index=i, ranges=[_parse_range(r) for r in raw])
        if len({r.subnet.version for r in rs.ranges}) != 1:
            raise _bad(f"range set {i} mixes IPv4 and IPv6")
        for a in range(len(rs.ranges)):
            for b in range(a + 1, len(rs.ranges)):
                ra, rb = rs.ranges[a], rs.ranges[b]
                if ra.start <= rb.end and rb.start <= ra.end:
                    raise _bad(f"range {ra} overlaps with range {rb}")
        sets.append(rs)
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            if any(ra.subnet.overlaps(rb.subnet) for ra in a.ranges for rb in b.ranges):
                raise _bad(f"range set {a.index} overlaps with {b.index}")
    routes = ipam.get("routes") or []
    if not isinstance(routes, list) or not all(isinstance(r, dict) and isinstance(r.get("dst"), str) for r in routes):
        raise _bad("invalid IPAM config: every route needs a 'dst'")
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str):
        raise _bad("invalid IPAM config: 'dataDir' must be a string")
    return IPAMConfig(name=name, data_dir=data_dir, range_sets=sets, routes=routes,
                      resolv_conf=ipam.get("resolvConf") or "", requested=_requested(args))


def _requested(args: CmdArgs) -> list[IPAddress]:
    values: list[Any] = []
    ip_arg = args.cni_args().get("IP")
    if ip_arg:
        values.extend(ip_arg.split(","))
    cni = (args.conf.get("args") or {}).get("cni") if isinstance(args.conf.get("args"), dict) else None
    if isinstance(cni, dict) and isinstance(cni.get("ips"), list):
        values.extend(cni["ips"])
    if isinstance(args.runtime_config.get("ips"), list):
        values.extend(args.runtime_config["ips"])
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_interface(str(v).strip()).ip)
        except ValueError:
            raise _bad(f"invalid requested IP {v!r}") from None
    return out


class Store:
    """The on-disk allocations of one network: ``<dataDir>/<network name>/``."""

    def __init__(self, data_dir: str, network: str) -> None:
        if "/" in network or network in (".", ".."):
            raise _bad(f"invalid network name {network!r} for a directory")
        self.dir = os.path.join(data_dir, network)

    @contextmanager
    def locked(self) -> Iterator[None]:
        os.makedirs(self.dir, 0o755, exist_ok=True)
        fd = os.open(os.path.join(self.dir, "lock"), os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def reserve(self, container_id: str, ifname: str, ip: IPAddress, set_index: int) -> bool:
        path = os.path.join(self.dir, str(ip))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, (container_id + LINE_BREAK + ifname).encode())
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self._write(LAST_IP_PREFIX + str(set_index), str(ip))
        return True

    def _write(self, name: str, text: str) -> None:
        fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def last_reserved(self, set_index: int) -> IPAddress | None:
        try:
            with open(os.path.join(self.dir, LAST_IP_PREFIX + str(set_index))) as fh:
                return ipaddress.ip_address(fh.read().strip())
        except (OSError, ValueError):
            return None

    def allocations(self) -> Iterator[tuple[IPAddress, str, str]]:
        """(address, container ID, ifname) of every allocation file; ifname is '' in the old format."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as fh:
                    text = fh.read().decode(errors="replace").strip()
            except OSError:
                continue
            cid, _, ifname = text.partition(LINE_BREAK)
            yield ip, cid.strip(), ifname.strip()

    def by_id(self, container_id: str, ifname: str) -> list[IPAddress]:
        return [ip for ip, cid, ifn in self.allocations() if cid == container_id and ifn in (ifname, "")]

    def release(self, ip: IPAddress) -> None:
        with suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, str(ip)))


def _allocate(store: Store, rs: RangeSet, args: CmdArgs, requested: list[IPAddress]) -> tuple[IPAddress, Range]:
    for ip in store.by_id(args.container_id, args.ifname):
        if rs.range_for(ip) is not None:
            raise CNIError(ERR_INTERNAL, f"{ip} has been allocated to {args.container_id}, "
                           "duplicate allocation is not allowed")
    for ip in requested:
        r = rs.range_for(ip)
        if r is None:
            continue
        requested.remove(ip)
        if ip == r.gateway:
            raise CNIError(ERR_INTERNAL, f"requested ip {ip} is subnet's gateway")
        if not store.reserve(args.container_id, args.ifname, ip, rs.index):
            raise CNIError(ERR_INTERNAL, f"requested IP address {ip} is not available in range set {rs}")
        return ip, r
    for ip, r in rs.candidates(store.last_reserved(rs.index)):
        if store.reserve(args.container_id, args.ifname, ip, rs.index):
            return ip, r
    raise CNIError(ERR_INTERNAL, f"no IP addresses available in range set: {rs}")


def _dns(path: str) -> dict[str, Any]:
    if not path:
        return {}
    dns: dict[str, Any] = {}
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise CNIError(ERR_IO_FAILURE, f"cannot read resolvConf {path}", str(exc)) from None
    keys = {"nameserver": "nameservers", "search": "search", "options": "options"}
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        if fields[0] == "domain":
            dns["domain"] = fields[1]
        elif fields[0] in keys:
            dns.setdefault(keys[fields[0]], []).extend(fields[1:])
    return dns


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    conf = load_config(args)
    store = Store(conf.data_dir, conf.name)
    requested = list(conf.requested)
    ips: list[dict[str, Any]] = []
    with store.locked():
        done: list[IPAddress] = []
        try:
            for rs in conf.range_sets:
                ip, r = _allocate(store, rs, args, requested)
                done.append(ip)
                entry: dict[str, Any] = {"address": f"{ip}/{r.subnet.prefixlen}"}
                if r.gateway is not None:
                    entry["gateway"] = str(r.gateway)
                ips.append(entry)
            if requested:
                raise CNIError(ERR_INTERNAL, f"failed to allocate all requested IPs: {', '.join(map(str, requested))}")
        except BaseException:
            for ip in done:
                store.release(ip)
            raise
    result: dict[str, Any] = {"cniVersion": "1.1.0", "ips": ips}
    if conf.routes:
        result["routes"] = conf.routes
    result["dns"] = _dns(conf.resolv_conf)
    return result


def cmd_del(args: CmdArgs) -> None:
    conf = load_config(args)
    store = Store(conf.data_dir, conf.name)
    if not os.path.isdir(store.dir):
        return
    with store.locked():
        for ip in store.by_id(args.container_id, args.ifname):
            store.release(ip)


def cmd_check(args: CmdArgs) -> None:
    conf = load_config(args)
    store = Store(conf.data_dir, conf.name)
    if not store.by_id(args.container_id, args.ifname):
        raise CNIError(ERR_INTERNAL, f"host-local: Failed to find address added by container {args.container_id}")


def cmd_gc(args: CmdArgs) -> None:
    """Release every allocation whose (container ID, ifname) is not among the valid attachments."""
    conf = load_config(args)
    valid = args.conf.get("cni.dev/valid-attachments") or []
    keep = {(a.get("containerID"), a.get("ifname")) for a in valid if isinstance(a, dict)}
    keep_ids = {cid for cid, _ in keep}
    store = Store(conf.data_dir, conf.name)
    if not os.path.isdir(store.dir):
        return
    with store.locked():
        for ip, cid, ifname in list(store.allocations()):
            if (cid, ifname) in keep or (not ifname and cid in keep_ids):
                continue
            store.release(ip)


def cmd_status(args: CmdArgs) -> None:
    conf = load_config(args)
    path = conf.data_dir
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    if not path or not os.access(path, os.W_OK):
        raise CNIError(ERR_PLUGIN_NOT_AVAILABLE, f"host-local: dataDir {conf.data_dir} is not writable")
