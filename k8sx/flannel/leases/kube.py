"""The Kubernetes lease store (``--kube-subnet-mgr``): Node ``podCIDR`` plus flannel's annotations.

Why this shape: with the kube subnet manager flanneld does not choose subnets; kube-controller-
manager puts one in ``spec.podCIDR`` and flanneld publishes how to reach it as annotations on its
own Node (``flannel.alpha.coreos.com/backend-type``, ``backend-data``, ``public-ip``,
``kube-subnet-manager``). Peers are every Node whose ``kube-subnet-manager`` annotation is
``"true"``; a lease here has a nominal 24 h expiry that is stored nowhere, so renewal is a no-op.
The network config comes from a file (``/etc/kube-flannel/net-conf.json`` in kube-flannel.yml).
Requests are raw JSON through the kubernetes client's connection (kubectl's flags), and the watch
is a streamed ``?watch=true`` list.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from k8sx.errors import K8sxError
from k8sx.flannel import config as netconfig
from k8sx.flannel.leases import LeaseStore, Resync, StoreUnavailable
from k8sx.flannel.subnet import SUBNET_TTL, Event, Lease, LeaseAttrs
from k8sx.kube import KubeConnection

log = logging.getLogger(__name__)

PREFIX = "flannel.alpha.coreos.com"
DEFAULT_NET_CONF = "/etc/kube-flannel/net-conf.json"
WATCH_TIMEOUT = 300


def annotations_for(attrs: LeaseAttrs, prefix: str = PREFIX) -> dict[str, str]:
    """The annotations flanneld writes for its lease (backend-data is the JSON text; ``null`` for host-gw)."""
    return {
        f"{prefix}/backend-data": json.dumps(attrs.backend_data, separators=(",", ":")),
        f"{prefix}/backend-type": attrs.backend_type,
        f"{prefix}/kube-subnet-manager": "true",
        f"{prefix}/public-ip": attrs.public_ip,
    }


def node_lease(node: dict[str, Any], prefix: str = PREFIX) -> Lease | None:
    """The lease a Node carries, or None if it is not (yet) a flannel node."""
    meta = node.get("metadata") or {}
    ann = meta.get("annotations") or {}
    cidr = (node.get("spec") or {}).get("podCIDR")
    if ann.get(f"{prefix}/kube-subnet-manager") != "true" or not cidr:
        return None
    try:
        subnet = ipaddress.IPv4Network(cidr)
        data = json.loads(ann.get(f"{prefix}/backend-data") or "null")
    except ValueError:
        log.warning("node %s: unusable podCIDR or backend-data annotation", meta.get("name"))
        return None
    public_ip = ann.get(f"{prefix}/public-ip-overwrite") or ann.get(f"{prefix}/public-ip") or ""
    attrs = LeaseAttrs(public_ip=public_ip, backend_type=ann.get(f"{prefix}/backend-type", ""), backend_data=data)
    return Lease(subnet, attrs, expiration=time.time() + SUBNET_TTL, handle=meta.get("name"))


class KubeStore(LeaseStore):
    def __init__(self, conn: KubeConnection, node_name: str | None = None, net_conf: str = DEFAULT_NET_CONF,
                 prefix: str = PREFIX) -> None:
        self.conn = conn
        self.node_name = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        self.net_conf = net_conf
        self.prefix = prefix
        self._api: Any = None
        self._watch_resp: Any = None
        self._lock = threading.Lock()
        self.description = "the Kubernetes API"

    def _client(self) -> Any:
        if self._api is None:
            self._api = self.conn.api_client()
            self.description = f"the Kubernetes API at {self._api.configuration.host}"
        return self._api

    def _call(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json", stream: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        api = self._client()
        try:
            m, url, headers, data, _ = api.param_serialize(
                method, path, query_params=query or [], body=body,
                header_params={"Accept": "application/json", **({"Content-Type": content_type} if body else {})},
                auth_settings=["BearerToken"])
            resp = api.call_api(m, url, header_params=headers, body=data,
                                _request_timeout=None if stream else (self.conn.timeout() or 10))
        except ApiException as exc:
            if exc.status in (0, 502, 503, 504):
                raise StoreUnavailable(f"{self.description}: {exc.reason}") from None
            raise K8sxError(f"{method} {path}: the API server answered {exc.status} {exc.reason}") from None
        except (HTTPError, OSError) as exc:
            raise StoreUnavailable(f"cannot reach {self.description}: {exc}") from None
        if stream:
            if resp.status != 200:
                raise StoreUnavailable(f"watch {path}: the API server answered {resp.status}")
            return resp.response
        raw = resp.read()
        try:
            doc = json.loads(raw or b"null")
        except ValueError:
            doc = None
        if resp.status >= 500:
            raise StoreUnavailable(f"{method} {path}: the API server answered {resp.status}")
        if resp.status == 404:
            return None
        if not 200 <= resp.status < 300:
            msg = doc.get("message") if isinstance(doc, dict) else raw[:200]
            raise K8sxError(f"{method} {path}: the API server answered {resp.status}: {msg}")
        return doc

    def _path(self) -> str:
        return "/api/v1/nodes/" + urllib.parse.quote(self.node_name, safe="")

    def network_config(self) -> netconfig.NetConfig:
        return netconfig.load_file(self.net_conf)

    def acquire(self, config: netconfig.NetConfig, attrs: LeaseAttrs,
                previous: ipaddress.IPv4Network | None = None) -> Lease:
        node = self._call("GET", self._path())
        if node is None:
            raise K8sxError(f"node {self.node_name!r} does not exist in {self.description}",
                            hint="pass --node-name or set NODE_NAME to this node's name")
        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr:
            raise K8sxError(f"node {self.node_name} has no spec.podCIDR: is kube-controller-manager "
                            "allocating node CIDRs (--allocate-node-cidrs)?")
        subnet = ipaddress.IPv4Network(cidr)
        if not subnet.subnet_of(config.network):
            raise K8sxError(f"node {self.node_name}'s podCIDR {subnet} is not in the Network {config.network}")
        ann = (node.get("metadata") or {}).get("annotations") or {}
        overwrite = ann.get(f"{self.prefix}/public-ip-overwrite")
        if overwrite:
            attrs = LeaseAttrs(overwrite, attrs.backend_type, attrs.backend_data)
        want = annotations_for(attrs, self.prefix)
        if any(ann.get(k) != v for k, v in want.items()):
            self._call("PATCH", self._path(), {"metadata": {"annotations": want}},
                       content_type="application/merge-patch+json")
        return Lease(subnet, attrs, expiration=time.time() + SUBNET_TTL, handle=self.node_name)

    def node_ready(self, lease: Lease) -> None:
        """flanneld's NetworkUnavailable=False condition (reason FlannelIsUp) on this node's status."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cond = {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
                "message": "Flannel is running on this node", "lastTransitionTime": now, "lastHeartbeatTime": now}
        self._call("PATCH", self._path() + "/status", {"status": {"conditions": [cond]}},
                   content_type="application/strategic-merge-patch+json")

    def renew(self, lease: Lease) -> Lease:
        return Lease(lease.subnet, lease.attrs, expiration=time.time() + SUBNET_TTL, handle=lease.handle)

    def leases(self) -> tuple[list[Lease], Any]:
        doc = self._call("GET", "/api/v1/nodes") or {}
        leases = [lease for node in doc.get("items") or [] if (lease := node_lease(node, self.prefix))]
        rv = (doc.get("metadata") or {}).get("resourceVersion")
        return leases, {"rv": rv, "known": {lease.handle: lease for lease in leases}}

    def watch(self, cursor: Any, stop: threading.Event) -> Iterator[tuple[list[Event], Any]]:
        known: dict[str, Lease] = dict(cursor["known"])
        query = [("watch", "true"), ("timeoutSeconds", str(WATCH_TIMEOUT))]
        if cursor.get("rv") and cursor["rv"].isdigit():
            query.append(("resourceVersion", cursor["rv"]))
        resp = self._call("GET", "/api/v1/nodes", query=query, stream=True)
        with self._lock:
            self._watch_resp = resp
        buf = b""
        rv = cursor.get("rv")
        try:
            for chunk in resp.stream(4096, decode_content=True):
                if stop.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        raise Resync(f"watch error: {obj.get('message')}")
                    name = (obj.get("metadata") or {}).get("name")
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    lease = node_lease(obj, self.prefix) if ev.get("type") != "DELETED" else None
                    events = []
                    old = known.get(name)
                    if old is not None and (lease is None or lease.subnet != old.subnet):
                        events.append(Event("removed", old))
                        known.pop(name)
                    if lease is not None and (old is None or old.subnet != lease.subnet or old.attrs != lease.attrs):
                        events.append(Event("added", lease))
                        known[name] = lease
                    if events:
                        yield events, {"rv": rv, "known": dict(known)}
        except Resync:
            raise
        except Exception as exc:  # urllib3 protocol errors when the server goes away
            if stop.is_set():
                return
            raise StoreUnavailable(f"watch on {self.description} broke: {exc}") from None
        finally:
            with self._lock:
                self._watch_resp = None
            resp.release_conn()

    def close(self) -> None:
        with self._lock:
            resp = self._watch_resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
