"""The CNI runner: libcni's ``CNIConfig`` in Python, for ``k8sx cni`` and the CRI runtime (in-process).

Why: attaching a pod is more than running plugins. The chain must see exactly what libcni gives
it (the list's name and cniVersion injected, ``prevResult`` chaining, ``runtimeConfig`` filtered by
declared capabilities, CHECK/DEL fed from the cached ADD result converted to the list's version,
DEL in reverse), and the cache must be libcni's, so that a node can be driven by containerd, cnitool
and k8sx interchangeably. Spec 1.1's STATUS and GC are here too (cnitool has neither).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from k8sx.cni import cache, invoke
from k8sx.cni.conf import (
    NetworkConfig,
    NetworkConfigList,
    validate_container_id,
    validate_ifname,
    validate_network_name,
)
from k8sx.cni.types import (
    ERR_INCOMPATIBLE_CNI_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_ENVIRONMENT_VARIABLES,
    CNIError,
    go_json,
    version_gte,
)

DEFAULT_CNI_PATH = ("/opt/cni/bin",)


@dataclass
class RuntimeConf:
    """What the runtime knows about one attachment (libcni's ``RuntimeConf``)."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = ""

    def env(self) -> dict[str, str]:
        return {
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in self.args),
        }


@dataclass
class TraceStep:
    """One plugin invocation of a chain, for ``--trace`` and for callers that want timings."""

    plugin: str
    command: str
    seconds: float
    stdin: dict[str, Any]
    result: dict[str, Any] | None = None
    error: CNIError | None = None


def parse_cni_args(text: str) -> list[tuple[str, str]]:
    """``K=V;K2=V2`` (cnitool's CNI_ARGS) -> pairs; an empty string is no args."""
    if not text:
        return []
    pairs = []
    for pair in text.split(";"):
        kv = pair.split("=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, f"invalid CNI_ARGS pair {pair!r}",
                           "expected K=V pairs separated by ';'")
        pairs.append((kv[0], kv[1]))
    return pairs


def _effective_version(netconf: NetworkConfigList) -> str:
    """The version gating CHECK/DEL/STATUS/GC; an absent cniVersion means 0.1.0, as in the spec."""
    return netconf.cni_version or "0.1.0"


def build_plugin_conf(netconf: NetworkConfigList, plugin: NetworkConfig, prev_result: dict[str, Any] | None,
                      rt: RuntimeConf | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A plugin's stdin: its entry with name/cniVersion (and prevResult, runtimeConfig) injected."""
    conf = dict(plugin.raw)
    conf["name"] = netconf.name
    conf["cniVersion"] = netconf.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if rt is not None:
        runtime_config = {k: rt.capability_args[k] for k in plugin.capabilities if k in rt.capability_args}
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
    if extra:
        conf.update(extra)
    return conf


class Runner:
    """Runs network configuration lists (libcni's ``CNIConfig``): ADD, CHECK, DEL, STATUS, GC, VERSION.

    ``cache_dir`` overrides the per-call ``RuntimeConf.cache_dir`` (both default to /var/lib/cni).
    ``on_step`` is called after every plugin invocation with its timing and outcome.
    """

    def __init__(self, cni_path: Sequence[str] | str = DEFAULT_CNI_PATH, cache_dir: str = "",
                 on_step: Callable[[TraceStep], None] | None = None) -> None:
        self.cni_path = [p for p in (cni_path.split(os.pathsep) if isinstance(cni_path, str) else cni_path) if p]
        self.cache_dir = cache_dir
        self.on_step = on_step

    # -- plumbing ---------------------------------------------------------------------------

    def _cache_dir(self, rt: RuntimeConf | None = None) -> str:
        return self.cache_dir or (rt.cache_dir if rt else "") or cache.DEFAULT_CACHE_DIR

    def _run(self, plugin: NetworkConfig, command: str, conf: dict[str, Any], env: dict[str, str]) -> dict | None:
        start = time.perf_counter()
        try:
            out = invoke.exec_plugin(plugin.type, command, go_json(conf), env, self.cni_path)
        except CNIError as e:
            if self.on_step:
                self.on_step(TraceStep(plugin.type, command, time.perf_counter() - start, conf, None, e))
            raise
        if self.on_step:
            self.on_step(TraceStep(plugin.type, command, time.perf_counter() - start, conf, out))
        return out

    @staticmethod
    def _validate(netconf: NetworkConfigList, rt: RuntimeConf) -> None:
        validate_container_id(rt.container_id)
        validate_network_name(netconf.name)
        validate_ifname(rt.ifname)

    # -- the spec's operations --------------------------------------------------------------

    def add_network(self, netconf: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any]:
        """ADD every plugin in order, chaining results; cache and return the last one."""
        self._validate(netconf, rt)
        for p in netconf.plugins:  # fail before anything runs if a link of the chain is missing
            invoke.find_plugin(p.type, self.cni_path)
        result: dict[str, Any] | None = None
        env = rt.env()
        for plugin in netconf.plugins:
            result = self._run(plugin, "ADD", build_plugin_conf(netconf, plugin, result, rt), env)
        assert result is not None  # a list has at least one plugin and ADD always returns a result
        cache.write(self._cache_dir(rt), cache.CacheEntry(
            container_id=rt.container_id, ifname=rt.ifname, network=netconf.name, config=netconf.bytes,
            result=result, netns=rt.netns, cni_args=list(rt.args), capability_args=dict(rt.capability_args)))
        return result

    def check_network(self, netconf: NetworkConfigList, rt: RuntimeConf) -> None:
        """CHECK every plugin in order with the cached result as prevResult (spec >= 0.4.0)."""
        version = _effective_version(netconf)
        if not version_gte(version, "0.4.0"):
            raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION,
                           f'configuration version "{netconf.cni_version}" does not support the CHECK command')
        if netconf.disable_check:
            return
        self._validate(netconf, rt)
        prev = self.get_cached_result(netconf, rt)
        env = rt.env()
        for plugin in netconf.plugins:
            self._run(plugin, "CHECK", build_plugin_conf(netconf, plugin, prev, rt), env)

    def del_network(self, netconf: NetworkConfigList, rt: RuntimeConf) -> None:
        """DEL every plugin in reverse order (cached result as prevResult for >= 0.4.0), then uncache."""
        self._validate(netconf, rt)
        prev = None
        if version_gte(_effective_version(netconf), "0.4.0"):
            try:
                prev = self.get_cached_result(netconf, rt)
            except CNIError:  # an unreadable entry must not block the clean-up (libcni >= 1.2)
                prev = None
        env = rt.env()
        for plugin in reversed(netconf.plugins):
            self._run(plugin, "DEL", build_plugin_conf(netconf, plugin, prev, rt), env)
        cache.remove(self._cache_dir(rt), netconf.name, rt.container_id, rt.ifname)

    def get_cached_result(self, netconf: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any] | None:
        """The cached ADD result of this attachment, converted to the list's version (None if none)."""
        return cache.cached_result(self._cache_dir(rt), netconf.name, rt.container_id, rt.ifname,
                                   _effective_version(netconf))

    def get_status(self, netconf: NetworkConfigList) -> bool:
        """STATUS of every plugin (spec 1.1.0). False when the list is older and so was not asked;
        a plugin that is not ready raises its CNIError (code 50 or 51)."""
        if not version_gte(_effective_version(netconf), "1.1.0"):
            return False
        env = RuntimeConf(container_id="", netns="", ifname="").env()
        for plugin in netconf.plugins:
            self._run(plugin, "STATUS", build_plugin_conf(netconf, plugin, None, None), env)
        return True

    def gc(self, netconf: NetworkConfigList,
           valid_attachments: Iterable[tuple[str, str]] | None = None) -> list[cache.CacheEntry]:
        """Spec 1.1 GC (libcni's ``GCNetworkList``): DEL every cached attachment of this network not in
        ``valid_attachments`` (container id, ifname), then GC each plugin (1.1.0 lists only) with
        ``cni.dev/valid-attachments``. Returns the attachments deleted; errors are collected and
        raised together at the end."""
        if netconf.disable_gc:  # spec 1.1: the list opts out of GC altogether
            return []
        valid = {(c, i) for c, i in (valid_attachments or ())}
        errors: list[str] = []
        removed = []
        cache_dir = self._cache_dir()
        for entry in cache.attachments(cache_dir):
            if entry.network != netconf.name or (entry.container_id, entry.ifname) in valid:
                continue
            rt = RuntimeConf(container_id=entry.container_id, netns=entry.netns, ifname=entry.ifname,
                             args=entry.cni_args, capability_args=entry.capability_args, cache_dir=cache_dir)
            try:
                self.del_network(netconf, rt)
                removed.append(entry)
            except CNIError as e:
                errors.append(f"failed to delete stale attachment {entry.container_id} {entry.ifname}: {e}")
        if version_gte(_effective_version(netconf), "1.1.0"):
            extra = {"cni.dev/valid-attachments": [{"containerID": c, "ifname": i} for c, i in sorted(valid)]}
            env = RuntimeConf(container_id="", netns="", ifname="").env()
            for plugin in netconf.plugins:
                try:
                    self._run(plugin, "GC", build_plugin_conf(netconf, plugin, None, None, extra), env)
                except CNIError as e:
                    errors.append(f"failed to GC plugin {plugin.type}: {e}")
        if errors:
            raise CNIError(ERR_INTERNAL, "; ".join(errors))
        return removed

    def version_info(self, plugin_type: str, conf_version: str = "1.1.0") -> dict[str, Any]:
        """The plugin's VERSION answer (``cniVersion`` and ``supportedVersions``)."""
        return invoke.version_info(plugin_type, self.cni_path, conf_version)

    def validate_network(self, netconf: NetworkConfigList) -> list[str]:
        """Version negotiation (libcni's ``ValidateNetworkList``): every plugin must exist and support
        the list's cniVersion. Returns the capabilities the list declares."""
        version = _effective_version(netconf)
        problems = []
        for plugin in netconf.plugins:
            try:
                supported = self.version_info(plugin.type, version).get("supportedVersions", [])
            except CNIError as e:
                problems.append(str(e))
                continue
            if version not in supported:
                problems.append(f'plugin {plugin.type} does not support config version "{version}" '
                                f'(it supports {", ".join(supported)})')
        if problems:
            raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, "; ".join(problems))
        return sorted({c for p in netconf.plugins for c in p.capabilities})


def default_container_id(netns_path: str) -> str:
    """cnitool's container id: ``cnitool-`` + hex of the first 10 bytes of sha512(absolute netns path)."""
    return "cnitool-" + hashlib.sha512(os.path.abspath(netns_path).encode()).digest()[:10].hex()
