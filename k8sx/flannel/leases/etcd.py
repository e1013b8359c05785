"""The etcd v3 lease store, spoken through etcd's JSON gRPC gateway (``/v3/...``) with the stdlib.

Why no client library: the maintained Python clients either pin protobuf 3 (``etcd3``) or pull in a
gRPC stack for six calls; etcd 3.4's gateway serves range, put, txn, lease grant/revoke and a
streaming watch over plain HTTP with base64 keys. The data is exactly flanneld's: the config at
``<prefix>/config``, each lease at ``<prefix>/subnets/10.244.1.0-24`` holding the ``LeaseAttrs``
JSON, attached to its own etcd lease of 24 h, created by a transaction that requires the key to be
absent (``Version(key) == 0``) and renewed by putting the same value under a fresh lease.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from k8sx.errors import K8sxError
from k8sx.flannel import config as netconfig
from k8sx.flannel.leases import LeaseStore, Resync, StoreUnavailable
from k8sx.flannel.subnet import SUBNET_TTL, Event, Lease, LeaseAttrs, allocate, parse_subnet_key, subnet_key

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/coreos.com/network"
WATCH_IDLE = 30.0  # reconnect a silent watch after this long (catches half-open connections)


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text or "")


def prefix_end(prefix: str) -> str:
    """etcd's range_end for "every key starting with ``prefix``"."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw).decode()


class EtcdClient:
    """A minimal etcd v3 client over the JSON gateway, trying each endpoint in turn."""

    def __init__(self, endpoints: str | list[str], timeout: float = 5.0) -> None:
        eps = endpoints.split(",") if isinstance(endpoints, str) else endpoints
        self.endpoints = [e.strip().rstrip("/") for e in eps if e.strip()]
        if not self.endpoints:
            raise K8sxError("no etcd endpoint given")
        for ep in self.endpoints:
            u = urllib.parse.urlsplit(ep)
            if u.scheme != "http" or not u.hostname:
                raise K8sxError(f"etcd endpoint {ep!r}: only http://HOST:PORT is supported")
        self.timeout = timeout
        self._watch_conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _conn(self, endpoint: str, timeout: float | None) -> http.client.HTTPConnection:
        u = urllib.parse.urlsplit(endpoint)
        return http.client.HTTPConnection(u.hostname or "", u.port or 2379, timeout=timeout)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers."""
        errors = []
        for ep in self.endpoints:
            conn = self._conn(ep, self.timeout)
            try:
                conn.request("POST", "/v3/" + path, json.dumps(body), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{ep}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
                continue
            finally:
                conn.close()
            try:
                doc = json.loads(data or b"{}")
            except ValueError:
                raise StoreUnavailable(f"etcd {ep} answered {resp.status} with non-JSON to /v3/{path}") from None
            if resp.status != 200:
                msg = doc.get("message") or doc.get("error") or data.decode(errors="replace")
                if resp.status >= 500 or "no leader" in str(msg):
                    errors.append(f"{ep}: {msg}")
                    continue
                raise K8sxError(f"etcd /v3/{path}: {msg}")
            return doc
        raise StoreUnavailable(f"etcd unreachable ({'; '.join(errors)})")

    # kv ------------------------------------------------------------------------------------------
    def range(self, key: str, end: str | None = None) -> tuple[list[dict[str, Any]], int]:
        body: dict[str, Any] = {"key": b64(key)}
        if end:
            body["range_end"] = b64(end)
        doc = self.call("kv/range", body)
        return doc.get("kvs") or [], int(doc.get("header", {}).get("revision", 0))

    def get(self, key: str) -> bytes | None:
        kvs, _ = self.range(key)
        return unb64(kvs[0].get("value", "")) if kvs else None

    def put(self, key: str, value: str | bytes, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("kv/put", body)

    def create(self, key: str, value: str, lease: int) -> bool:
        """Put only if the key does not exist (a Version == 0 transaction); False if it did."""
        doc = self.call("kv/txn", {
            "compare": [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
            "success": [{"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}],
        })
        return bool(doc.get("succeeded"))

    def delete(self, key: str) -> None:
        self.call("kv/deleterange", {"key": b64(key)})

    # leases --------------------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        doc = self.call("lease/grant", {"TTL": str(ttl)})
        return int(doc["ID"])

    def revoke(self, lease_id: int) -> None:
        try:
            self.call("kv/lease/revoke", {"ID": str(lease_id)})
        except K8sxError as exc:
            if "not found" not in exc.message:
                raise

    def time_to_live(self, lease_id: int) -> int:
        doc = self.call("kv/lease/timetolive", {"ID": str(lease_id)})
        return int(doc.get("TTL", -1))

    # watch ---------------------------------------------------------------------------------------
    def watch(self, key: str, end: str, start_revision: int, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Stream the watch events on [key, end) from ``start_revision`` (one ``result`` per item)."""
        body = json.dumps({"create_request": {"key": b64(key), "range_end": b64(end),
                                              "start_revision": str(start_revision)}})
        errors = []
        for ep in self.endpoints:
            conn = self._conn(ep, WATCH_IDLE)
            try:
                conn.request("POST", "/v3/watch", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                errors.append(f"{ep}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
                continue
            with self._lock:
                self._watch_conn = conn
            try:
                if stop.is_set():
                    return
                while not stop.is_set():
                    try:
                        line = resp.readline()
                    except TimeoutError:
                        return  # idle: the caller reconnects from its cursor
                    except (OSError, http.client.HTTPException) as exc:
                        if stop.is_set():
                            return
                        raise StoreUnavailable(f"etcd watch on {ep} broke: {exc}") from None
                    if not line:
                        if stop.is_set():
                            return
                        raise StoreUnavailable(f"etcd {ep} closed the watch")
                    line = line.strip()
                    if not line:
                        continue
                    doc = json.loads(line)
                    if "error" in doc:
                        raise StoreUnavailable(f"etcd watch on {ep}: {doc['error'].get('message', doc['error'])}")
                    yield doc.get("result") or {}
                return
            finally:
                with self._lock:
                    self._watch_conn = None
                conn.close()
        raise StoreUnavailable(f"etcd unreachable ({'; '.join(errors)})")

    def interrupt(self) -> None:
        """Break a running watch (from another thread)."""
        with self._lock:
            conn = self._watch_conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


class EtcdStore(LeaseStore):
    """flanneld's ``--etcd-endpoints``/``--etcd-prefix`` store."""

    def __init__(self, endpoints: str = DEFAULT_ENDPOINTS, prefix: str = DEFAULT_PREFIX,
                 ttl: int = SUBNET_TTL, config_file: str | None = None) -> None:
        self.client = EtcdClient(endpoints)
        self.config_file = config_file
        self.prefix = "/" + prefix.strip("/")
        self.ttl = ttl
        self.description = f"etcd {','.join(self.client.endpoints)} (prefix {self.prefix})"

    @property
    def subnets(self) -> str:
        return self.prefix + "/subnets/"

    def network_config(self) -> netconfig.NetConfig:
        """``<prefix>/config``, or the file given instead (``--net-config-file``)."""
        if self.config_file:
            return netconfig.load_file(self.config_file)
        key = self.prefix + "/config"
        raw = self.client.get(key)
        if raw is None:
            raise netconfig.ConfigError(f"no network config in etcd: key {key} is missing",
                                        hint=f"etcdctl put {key} '{{\"Network\":\"10.244.0.0/16\","
                                             f"\"Backend\":{{\"Type\":\"vxlan\"}}}}'")
        return netconfig.parse(raw, f"etcd key {key}")

    def _lease(self, kv: dict[str, Any]) -> Lease | None:
        key = unb64(kv.get("key", "")).decode(errors="replace")
        subnet = parse_subnet_key(key)
        if subnet is None:
            return None
        try:
            attrs = LeaseAttrs.from_json(unb64(kv.get("value", "")))
        except ValueError:
            log.warning("ignoring %s: its value is not flannel lease attributes", key)
            return None
        return Lease(subnet=subnet, attrs=attrs, handle=int(kv.get("lease", 0) or 0))

    def leases(self) -> tuple[list[Lease], int]:
        kvs, revision = self.client.range(self.subnets, prefix_end(self.subnets))
        return [lease for kv in kvs if (lease := self._lease(kv)) is not None], revision

    def with_expiry(self, leases: list[Lease]) -> list[Lease]:
        now = time.time()
        out = []
        for lease in leases:
            ttl = self.client.time_to_live(lease.handle) if lease.handle else -1
            out.append(Lease(lease.subnet, lease.attrs, expiration=now + ttl if ttl >= 0 else 0.0,
                             handle=lease.handle))
        return out

    def _with_expiry(self, lease: Lease, lease_id: int, ttl: int) -> Lease:
        return Lease(subnet=lease.subnet, attrs=lease.attrs, expiration=time.time() + ttl, handle=lease_id)

    def acquire(self, config: netconfig.NetConfig, attrs: LeaseAttrs,
                previous: ipaddress.IPv4Network | None = None) -> Lease:
        value = attrs.to_json()
        for _ in range(10):
            existing, _ = self.leases()
            for lease in existing:
                if lease.attrs.public_ip == attrs.public_ip and config.contains(lease.subnet):
                    return self._update(lease.subnet, attrs, lease.handle)
            taken = [lease.subnet for lease in existing]
            if previous is not None and config.contains(previous) and previous not in taken:
                subnet = previous
            else:
                subnet = allocate(config, taken)
            lease_id = self.client.grant(self.ttl)
            if self.client.create(self.subnets + subnet_key(subnet), value, lease_id):
                return self._with_expiry(Lease(subnet, attrs), lease_id, self.ttl)
            self.client.revoke(lease_id)  # somebody took it in between: try again
        raise K8sxError("could not acquire a subnet lease in etcd after 10 tries (others keep taking them)")

    def _update(self, subnet: ipaddress.IPv4Network, attrs: LeaseAttrs, old_id: int | None) -> Lease:
        lease_id = self.client.grant(self.ttl)
        self.client.put(self.subnets + subnet_key(subnet), attrs.to_json(), lease_id)
        if old_id:
            self.client.revoke(old_id)  # it holds no key any more
        return self._with_expiry(Lease(subnet, attrs), lease_id, self.ttl)

    def renew(self, lease: Lease) -> Lease:
        return self._update(lease.subnet, lease.attrs, lease.handle)

    def watch(self, cursor: int, stop: threading.Event) -> Iterator[tuple[list[Event], int]]:
        for result in self.client.watch(self.subnets, prefix_end(self.subnets), cursor + 1, stop):
            if result.get("compact_revision") not in (None, "0", 0) or result.get("canceled"):
                raise Resync(f"etcd watch canceled (compacted at {result.get('compact_revision')})")
            events = []
            for ev in result.get("events") or []:
                kv = ev.get("kv") or {}
                cursor = max(cursor, int(kv.get("mod_revision", 0) or 0))
                if ev.get("type") == "DELETE":
                    subnet = parse_subnet_key(unb64(kv.get("key", "")).decode(errors="replace"))
                    if subnet is not None:
                        events.append(Event("removed", Lease(subnet, LeaseAttrs(""))))
                elif (lease := self._lease(kv)) is not None:
                    events.append(Event("added", lease))
            if events:
                yield events, cursor

    def close(self) -> None:
        self.client.interrupt()
