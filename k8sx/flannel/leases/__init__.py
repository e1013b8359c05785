"""Lease stores: where subnet leases live (etcd v3, Kubernetes Node objects, or a local file).

Why one interface: the agent's loop (acquire, renew, list, watch) is the same whichever store holds
the leases, as in flanneld's ``subnet.Manager``; a store is picked by the command line and swapped
without the agent or the backends noticing.
"""

from __future__ import annotations

import ipaddress
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from k8sx.errors import K8sxError
from k8sx.flannel.config import NetConfig
from k8sx.flannel.subnet import Event, Lease, LeaseAttrs


class StoreUnavailable(K8sxError):
    """The store cannot be reached right now (the agent retries with backoff)."""


class Resync(Exception):
    """The watch lost its place (compaction, a restarted store): list again, then watch again."""


class LeaseStore(ABC):
    """The store interface the agent drives."""

    #: Shown in messages: ``etcd http://10.0.0.1:2379``.
    description: str = ""

    @abstractmethod
    def network_config(self) -> NetConfig:
        """The network configuration (net-conf.json) this store serves."""

    @abstractmethod
    def acquire(self, config: NetConfig, attrs: LeaseAttrs,
                previous: ipaddress.IPv4Network | None = None) -> Lease:
        """This node's lease: an existing one of its public IP, else ``previous`` if free, else a new one."""

    @abstractmethod
    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` (a fresh TTL); returns it with its new expiration."""

    @abstractmethod
    def leases(self) -> tuple[list[Lease], Any]:
        """Every current lease and a cursor for :meth:`watch` to continue from."""

    @abstractmethod
    def watch(self, cursor: Any, stop: threading.Event) -> Iterator[tuple[list[Event], Any]]:
        """Batches of changes after ``cursor``, each with the cursor to resume from, until ``stop``
        is set, :meth:`close` is called or the store ends an idle watch (the caller watches again).

        Raises StoreUnavailable when the store goes away and Resync when the cursor is no longer valid.
        """

    def node_ready(self, lease: Lease) -> None:  # noqa: B027  (only the kube store reports it)
        """Called once this node's network is up (subnet.env written)."""

    def with_expiry(self, leases: list[Lease]) -> list[Lease]:
        """``leases`` with their expiration filled in where the store has to be asked (etcd)."""
        return leases

    def close(self) -> None:  # noqa: B027  (most stores hold nothing to release)
        """Release connections; interrupts a running :meth:`watch`."""


def peers(leases: list[Lease], own: ipaddress.IPv4Network | None) -> dict[ipaddress.IPv4Network, Lease]:
    return {lease.subnet: lease for lease in leases if lease.subnet != own}


def open_store(*, kube: Any = None, node_name: str | None = None, lease_file: str | None = None,
               net_config_file: str | None = None, etcd_endpoints: str = "", etcd_prefix: str = "") -> LeaseStore:
    """The store the command line asks for: ``kube`` (a KubeConnection) for the kube subnet manager,
    ``lease_file`` for the local store, else etcd. ``net_config_file`` replaces the store's config source."""
    store: LeaseStore
    if kube is not None:
        from k8sx.flannel.leases.kube import DEFAULT_NET_CONF, KubeStore

        store = KubeStore(kube, node_name, net_config_file or DEFAULT_NET_CONF)
    elif lease_file:
        from k8sx.flannel.leases.local import LocalStore

        if not net_config_file:
            raise K8sxError("the local lease store needs --net-config-file (there is no store to hold the config)")
        store = LocalStore(lease_file, net_config_file)
    else:
        from k8sx.flannel.leases.etcd import DEFAULT_ENDPOINTS, DEFAULT_PREFIX, EtcdStore

        store = EtcdStore(etcd_endpoints or DEFAULT_ENDPOINTS, etcd_prefix or DEFAULT_PREFIX,
                          config_file=net_config_file)
    return store
