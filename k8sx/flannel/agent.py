"""The node agent behind ``k8sx flannel run``: flanneld's main loop.

Why one place: the order matters and is flanneld's: read the network config, pick the external
interface, let the backend build its device (the vxlan MAC goes into the lease), acquire the lease
(reusing this node's previous one), configure the backend, install the iptables rules, write
``subnet.env`` last, then program every peer and follow the store's watch, renew the lease before
it expires and re-check rules and routes periodically. An unreachable store is retried with
backoff and said so; routes stay as they are meanwhile. Stopping (SIGTERM) leaves the kernel state
in place, as flanneld does, so pods keep their connectivity across a restart of the agent.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from k8sx.errors import K8sxError
from k8sx.flannel import backends
from k8sx.flannel.config import NetConfig
from k8sx.flannel.iptables import TrafficManager
from k8sx.flannel.leases import LeaseStore, Resync, StoreUnavailable
from k8sx.flannel.subnet import Event, Lease, SubnetEnv, read_subnet_env, write_subnet_env

log = logging.getLogger("k8sx.flannel")
T = TypeVar("T")

BR_NETFILTER = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@dataclass
class AgentOptions:
    iface: str | None = None
    public_ip: str | None = None
    ip_masq: bool = False
    subnet_file: str = "/run/flannel/subnet.env"
    iptables_forward_rules: bool = True
    iptables_resync: float = 5.0
    route_resync: float = 10.0
    renew_margin: float = 60 * 60.0  # seconds before expiry (--subnet-lease-renew-margin minutes)
    backoff_max: float = 5.0


class Agent:
    def __init__(self, store: LeaseStore, opts: AgentOptions) -> None:
        self.store = store
        self.opts = opts
        self.stop_event = threading.Event()
        self.exit_code = 0
        self.own: Lease | None = None
        self.peers: dict[ipaddress.IPv4Network, Lease] = {}
        self.backend: backends.Backend | None = None
        self.config: NetConfig | None = None
        self._lock = threading.Lock()
        # pyroute2 sockets belong to the thread that made them: every netlink call runs on this one.
        self._kernel = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kernel")

    def _on_kernel(self, fn: Callable[[], T]) -> T:
        return self._kernel.submit(fn).result()

    # helpers ---------------------------------------------------------------------------------------
    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        delay = 0.5
        while True:
            try:
                return fn()
            except StoreUnavailable as exc:
                log.warning("%s: %s; retrying in %.1fs", what, exc.message, delay)
            if self.stop_event.wait(delay):
                raise _Stopped()
            delay = min(delay * 2, self.opts.backoff_max)

    def stop(self) -> None:
        self.stop_event.set()
        self.store.close()

    # start-up --------------------------------------------------------------------------------------
    def setup(self) -> None:
        from k8sx.net.link import Netlink

        if not os.path.exists(BR_NETFILTER):
            raise K8sxError(f"{BR_NETFILTER} does not exist: load br_netfilter (modprobe br_netfilter)",
                            hint="pod traffic on the CNI bridge must traverse iptables")
        self.config = config = self._retry("reading the network config", self.store.network_config)
        log.info("network %s, subnet length %d, backend %s %s", config.network, config.subnet_len,
                 config.backend_type, config.backend or "")
        self.nl = Netlink()
        ext = backends.external_interface(self.nl, self.opts.iface, self.opts.public_ip)
        log.info("external interface %s (%s, mtu %d), public IP %s", ext.name, ext.ip, ext.mtu, ext.public_ip)
        self.backend = backend = backends.load(config, self.nl, ext)
        attrs = backend.lease_attrs()
        prev = read_subnet_env(self.opts.subnet_file)
        previous = prev.subnet if prev is not None and prev.network == config.network else None
        self.own = own = self._retry("acquiring a lease", lambda: self.store.acquire(config, attrs, previous))
        log.info("lease acquired: %s (%s)", own.subnet, own.attrs.to_json())
        backend.start(own)
        self.traffic = TrafficManager(config.network, own.subnet, self.opts.ip_masq,
                                      forward=self.opts.iptables_forward_rules)
        self.traffic.apply()
        write_subnet_env(self.opts.subnet_file, SubnetEnv(config.network, own.subnet, backend.mtu,
                                                          self.opts.ip_masq))
        log.info("wrote %s", self.opts.subnet_file)
        try:
            self.store.node_ready(own)
        except K8sxError as exc:
            log.warning("could not report the node's network as available: %s", exc.message)

    # peers -----------------------------------------------------------------------------------------
    def _apply(self, events: list[Event]) -> None:
        self._on_kernel(lambda: self._apply_kernel(events))

    def _apply_kernel(self, events: list[Event]) -> None:
        assert self.backend is not None and self.own is not None
        with self._lock:
            for ev in events:
                sn = ev.lease.subnet
                if sn == self.own.subnet:
                    if ev.kind == "removed":
                        log.error("this node's lease %s was removed from the store: shutting down", sn)
                        self.exit_code = 1
                        self.stop()
                    continue
                try:
                    if ev.kind == "added":
                        old = self.peers.get(sn)
                        if old is not None and old.attrs == ev.lease.attrs:
                            continue
                        if not self.backend.accepts(ev.lease):
                            log.warning("ignoring lease %s of %s: backend %r, not %r", sn, ev.lease.attrs.public_ip,
                                        ev.lease.attrs.backend_type, self.backend.type)
                            continue
                        if old is not None:
                            self.backend.remove_peer(old)
                        self.backend.add_peer(ev.lease)
                        self.peers[sn] = ev.lease
                        log.info("peer %s at %s: programmed", sn, ev.lease.attrs.public_ip)
                    elif sn in self.peers:
                        self.backend.remove_peer(self.peers.pop(sn))
                        log.info("peer %s removed (lease deleted or expired): its routes are gone", sn)
                except OSError as exc:
                    log.error("peer %s: %s", sn, exc)

    def _sync_all(self) -> Any:
        leases, cursor = self._retry("listing leases", self.store.leases)
        current = {lease.subnet: lease for lease in leases}
        events = [Event("removed", lease) for sn, lease in list(self.peers.items()) if sn not in current]
        events += [Event("added", lease) for lease in leases]
        self._apply(events)
        return cursor

    def _watch_loop(self) -> None:
        cursor = self._sync_all()
        delay = 0.5
        while not self.stop_event.is_set():
            try:
                for events, resume in self.store.watch(cursor, self.stop_event):
                    self._apply(events)
                    cursor = resume
                    delay = 0.5
            except StoreUnavailable as exc:
                if self.stop_event.is_set():
                    return
                log.warning("watching leases: %s; routes stay as they are, retrying in %.1fs", exc.message, delay)
                if self.stop_event.wait(delay):
                    return
                delay = min(delay * 2, self.opts.backoff_max)
                cursor = self._sync_all()
                log.info("lease store %s reachable again: peers re-synchronised", self.store.description)
            except Resync as exc:
                log.info("%s: listing leases again", exc)
                cursor = self._sync_all()

    def _renew_loop(self) -> None:
        while not self.stop_event.is_set():
            assert self.own is not None
            wait = max(1.0, self.own.remaining() - self.opts.renew_margin)
            if self.stop_event.wait(wait):
                return
            self.own = self._retry("renewing the lease", lambda: self.store.renew(self.own))  # type: ignore[arg-type]
            log.info("lease %s renewed", self.own.subnet)

    def _resync_loop(self) -> None:
        next_rules = next_routes = time.monotonic()
        while not self.stop_event.wait(1.0):
            now = time.monotonic()
            try:
                if now >= next_rules:
                    next_rules = now + self.opts.iptables_resync
                    self.traffic.resync()
                if now >= next_routes and self.backend is not None:
                    next_routes = now + self.opts.route_resync
                    self._on_kernel(self._resync_routes)
            except OSError as exc:
                log.error("periodic check: %s", exc)

    def _resync_routes(self) -> None:
        if self.backend is not None:
            self.backend.resync(list(self.peers.values()))

    # the loop --------------------------------------------------------------------------------------
    def run(self) -> int:
        """Set up and serve until :meth:`stop`; returns the exit status."""
        try:
            self._on_kernel(self.setup)
            workers = [threading.Thread(target=self._guard, args=(fn,), name=fn.__name__, daemon=True)
                       for fn in (self._watch_loop, self._renew_loop, self._resync_loop)]
            for w in workers:
                w.start()
            log.info("running")
            self.stop_event.wait()
            for w in workers:
                w.join(5)
        except _Stopped:
            pass
        finally:
            if self.backend is not None:
                self.backend.stop()
            self._kernel.shutdown(wait=False)
        log.info("stopped; routes and devices left in place")
        return self.exit_code

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except _Stopped:
            pass
        except Exception as exc:  # a dead worker must not leave a zombie agent behind
            log.exception("%s failed: %s", fn.__name__, exc)
            self.exit_code = 1
            self.stop()


class _Stopped(Exception):
    """Stop was requested while waiting to retry."""
