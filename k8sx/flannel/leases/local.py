"""The local-file lease store: one node, no cluster, leases kept in a JSON file.

Why: a single machine (a laptop, a CI runner, a one-node test cluster) needs flannel's subnet.env
and local routing without running etcd or an API server. The file holds the leases by flanneld's
key (``10.244.1.0-24``) with flanneld's attribute JSON and an expiry time; writes are atomic
renames under an advisory lock, and the watch notices changes to the file.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from k8sx.errors import K8sxError
from k8sx.flannel import config as netconfig
from k8sx.flannel.leases import LeaseStore
from k8sx.flannel.subnet import SUBNET_TTL, Event, Lease, LeaseAttrs, allocate, parse_subnet_key, subnet_key

POLL = 0.2


class LocalStore(LeaseStore):
    def __init__(self, path: str, config_file: str, ttl: int = SUBNET_TTL) -> None:
        self.path = path
        self.config_file = config_file
        self.ttl = ttl
        self.description = f"local file {path}"

    def network_config(self) -> netconfig.NetConfig:
        return netconfig.load_file(self.config_file)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = self._read()
            before = json.dumps(doc, sort_keys=True)
            yield doc
            if json.dumps(doc, sort_keys=True) != before:
                tmp = self.path + ".tmp"
                with open(tmp, "w") as fh:
                    json.dump(doc, fh, indent=1, sort_keys=True)
                os.rename(tmp, self.path)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path) as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            return {"leases": {}}
        except (OSError, ValueError) as exc:
            raise K8sxError(f"lease file {self.path} is unreadable: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("leases"), dict):
            raise K8sxError(f"lease file {self.path} is not a k8sx flannel lease file")
        now = time.time()
        doc["leases"] = {k: v for k, v in doc["leases"].items() if v.get("expiration", 0) > now}
        return doc

    def _current(self, doc: dict[str, Any]) -> list[Lease]:
        out = []
        for key, entry in sorted(doc["leases"].items()):
            subnet = parse_subnet_key(key)
            if subnet is None:
                continue
            try:
                attrs = LeaseAttrs.from_json(json.dumps(entry["attrs"]))
            except (KeyError, ValueError):
                continue
            out.append(Lease(subnet, attrs, expiration=float(entry.get("expiration", 0))))
        return out

    def leases(self) -> tuple[list[Lease], Any]:
        leases = self._current(self._read())
        return leases, {lease.subnet: lease for lease in leases}

    def _put(self, doc: dict[str, Any], subnet: ipaddress.IPv4Network, attrs: LeaseAttrs) -> Lease:
        expiration = time.time() + self.ttl
        doc["leases"][subnet_key(subnet)] = {"attrs": json.loads(attrs.to_json()), "expiration": expiration}
        return Lease(subnet, attrs, expiration=expiration)

    def acquire(self, config: netconfig.NetConfig, attrs: LeaseAttrs,
                previous: ipaddress.IPv4Network | None = None) -> Lease:
        with self._locked() as doc:
            existing = self._current(doc)
            for lease in existing:
                if lease.attrs.public_ip == attrs.public_ip and config.contains(lease.subnet):
                    return self._put(doc, lease.subnet, attrs)
            taken = [lease.subnet for lease in existing]
            if previous is not None and config.contains(previous) and previous not in taken:
                return self._put(doc, previous, attrs)
            return self._put(doc, allocate(config, taken), attrs)

    def renew(self, lease: Lease) -> Lease:
        with self._locked() as doc:
            return self._put(doc, lease.subnet, lease.attrs)

    def watch(self, cursor: Any, stop: threading.Event) -> Iterator[tuple[list[Event], Any]]:
        known: dict[ipaddress.IPv4Network, Lease] = dict(cursor or {})
        while not stop.wait(POLL):
            now = {lease.subnet: lease for lease in self._current(self._read())}
            events = [Event("removed", lease) for sn, lease in known.items() if sn not in now]
            events += [Event("added", lease) for sn, lease in now.items()
                       if sn not in known or known[sn].attrs != lease.attrs]
            known = now
            if events:
                yield events, dict(known)
