"""The plugin side of the CNI protocol (the role of Go's ``pkg/skel``) for k8sx's own plugins.

Why this exists: every k8sx plugin must read ``CNI_*`` and its netconf the same way, refuse bad
input with the spec's error codes, convert its result to the caller's ``cniVersion`` and print it
like the reference plugins do. It is also the one entry of every path: :func:`invoke_inprocess`
(the runner, the CRI server) and :func:`run` (the plugin daemon, and an executable without a
daemon) run exactly the same code and produce the same bytes.

A plugin is a module of ``k8sx.cni.plugins`` with ``cmd_add``, ``cmd_check`` and ``cmd_del``
(optionally ``cmd_status``, ``cmd_gc`` and ``SUPPORTED_VERSIONS``), each taking a :class:`CmdArgs`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from k8sx.cni import invoke
from k8sx.cni.types import (
    CURRENT_VERSION,
    ERR_DECODING_FAILURE,
    ERR_INCOMPATIBLE_CNI_VERSION,
    ERR_INTERNAL,
    ERR_INVALID_ENVIRONMENT_VARIABLES,
    ERR_INVALID_NETWORK_CONFIG,
    ERR_IO_FAILURE,
    SUPPORTED_VERSIONS,
    CNIError,
    convert_result,
    version_gte,
)

PLUGIN_PACKAGE = "k8sx.cni.plugins."

# Which CNI_* a command needs (Go skel's table; STATUS/GC/VERSION need none but CNI_COMMAND).
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}


@dataclass
class CmdArgs:
    """One invocation: the CNI_* environment, the raw stdin and the decoded netconf."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: str
    stdin: bytes
    conf: dict[str, Any]
    env: Mapping[str, str] = field(repr=False)

    @property
    def cni_version(self) -> str:
        return str(self.conf.get("cniVersion") or "0.1.0")

    @property
    def name(self) -> str:
        return str(self.conf.get("name") or "")

    @property
    def runtime_config(self) -> dict[str, Any]:
        rc = self.conf.get("runtimeConfig")
        return rc if isinstance(rc, dict) else {}

    @property
    def prev_result(self) -> dict[str, Any] | None:
        prev = self.conf.get("prevResult")
        return prev if isinstance(prev, dict) and prev else None

    def cni_args(self) -> dict[str, str]:
        """``CNI_ARGS`` (``K=V;K2=V2``) as a dict; a malformed pair is an invalid-environment error."""
        out: dict[str, str] = {}
        for pair in self.args.split(";") if self.args else ():
            if not pair:
                continue
            key, sep, value = pair.partition("=")
            if not sep:
                raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, f"ARGS: invalid pair {pair!r}")
            out[key] = value
        return out

    def delegate(self, plugin_type: str, command: str, netconf: bytes) -> dict[str, Any] | None:
        """Run another plugin (IPAM, flannel's delegate) with this invocation's CNI_* and ``command``."""
        env = dict(self.env)
        env["CNI_COMMAND"] = command
        return invoke.delegate(plugin_type, command, netconf, env)

    def require(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        """A netconf field of the given JSON type (a wrong type is an invalid-config error)."""
        value = self.conf.get(key, default)
        if value is not None and not isinstance(value, kind):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"invalid network config: {key!r} has the wrong type")
        return value


def _load(module: str) -> ModuleType:
    if not module.startswith(PLUGIN_PACKAGE):
        raise CNIError(ERR_INTERNAL, f"not a k8sx plugin module: {module!r}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CNIError(ERR_INTERNAL, f"cannot load plugin module {module!r}", str(exc)) from None


def _supported(plugin: ModuleType) -> tuple[str, ...]:
    return tuple(getattr(plugin, "SUPPORTED_VERSIONS", SUPPORTED_VERSIONS))


def parse(env: Mapping[str, str], stdin: bytes) -> CmdArgs:
    """Validate the environment and decode the netconf as Go's skel does (codes 4, 6, 7)."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, "required env variables [CNI_COMMAND] missing")
    if command not in _REQUIRED_ENV:
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, f"unknown CNI_COMMAND: {command}")
    missing = [k for k in _REQUIRED_ENV[command] if not env.get(k)]
    if missing:
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, f"required env variables [{' '.join(missing)}] missing")
    try:
        conf = json.loads(stdin) if stdin.strip() else None
    except ValueError as exc:
        raise CNIError(ERR_DECODING_FAILURE, "decoding version from network config", str(exc)) from None
    if conf is None and command == "VERSION":
        conf = {}
    if not isinstance(conf, dict):
        raise CNIError(ERR_DECODING_FAILURE, "decoding network config: the netconf on stdin is not a JSON object")
    version = conf.get("cniVersion", "0.1.0")
    if not isinstance(version, str):
        raise CNIError(ERR_DECODING_FAILURE, "decoding version from network config: cniVersion is not a string")
    return CmdArgs(command=command, container_id=env.get("CNI_CONTAINERID", ""), netns=env.get("CNI_NETNS", ""),
                   ifname=env.get("CNI_IFNAME", ""), args=env.get("CNI_ARGS", ""), path=env.get("CNI_PATH", ""),
                   stdin=stdin, conf=conf, env=env)


def _check_version(args: CmdArgs, supported: tuple[str, ...]) -> None:
    version = args.conf.get("cniVersion") or "0.1.0"
    if version not in supported:
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION,
                       f'incompatible CNI versions; config is "{version}", plugin supports {list(supported)}')
    if args.command in ("ADD", "CHECK", "DEL") and "name" in args.conf and not isinstance(args.conf["name"], str):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "invalid network config: 'name' must be a string")
    if args.command in ("STATUS", "GC") and not version_gte(version, "1.1.0"):
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, f'config version "{version}" does not allow {args.command}')
    if args.command == "CHECK" and not version_gte(version, "0.4.0"):
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, f'config version "{version}" does not allow CHECK')


def encode(obj: dict[str, Any]) -> bytes:
    """What a plugin prints: Go's ``json.MarshalIndent(result, "", "    ")``."""
    return json.dumps(obj, indent=4, ensure_ascii=False).encode() + b"\n"


# The field order of the reference plugins' Go result structs (prevResult arrives key-sorted).
_ORDER = {
    "result": ("cniVersion", "interfaces", "ip4", "ip6", "ips", "routes", "dns"),
    "interfaces": ("name", "mac", "mtu", "sandbox", "socketPath", "pciID"),
    "ips": ("version", "interface", "address", "gateway"),
    "routes": ("dst", "gw", "mtu", "advmss", "priority", "table", "scope"),
    "dns": ("nameservers", "domain", "search", "options"),
}


def _ordered(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    order = _ORDER[kind]
    keys = [k for k in order if k in obj] + [k for k in obj if k not in order]
    return {k: obj[k] for k in keys}


def canonical(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with its keys in the reference plugins' order (as Go marshals the structs)."""
    out = _ordered(result, "result")
    for key in ("interfaces", "ips", "routes"):
        if isinstance(out.get(key), list):
            out[key] = [_ordered(x, key) if isinstance(x, dict) else x for x in out[key]]
    if isinstance(out.get("dns"), dict):
        out["dns"] = _ordered(out["dns"], "dns")
    return out


def render_result(result: dict[str, Any], cni_version: str) -> bytes:
    """A plugin's result (in its own ``cniVersion``, 1.1.0 if unset) converted to the caller's version."""
    if not result.get("cniVersion"):
        result = {"cniVersion": CURRENT_VERSION, **result}
    return encode(canonical(convert_result(result, cni_version)))


def _dispatch(plugin: ModuleType, args: CmdArgs) -> bytes:
    supported = _supported(plugin)
    if args.command == "VERSION":
        return encode({"cniVersion": CURRENT_VERSION, "supportedVersions": list(supported)})
    _check_version(args, supported)
    handler: Callable[[CmdArgs], Any] | None = getattr(plugin, "cmd_" + args.command.lower(), None)
    if handler is None:
        if args.command in ("STATUS", "GC"):  # nothing to report or collect for this plugin
            return b""
        raise CNIError(ERR_INTERNAL, f"{args.command} is not implemented by {plugin.__name__}")
    out = handler(args)
    if args.command == "ADD":
        if not isinstance(out, dict):
            raise CNIError(ERR_INTERNAL, "plugin returned no result for ADD")
        return render_result(out, args.cni_version)
    return b""


def preload() -> None:
    """Import every k8sx plugin and pyroute2 now, so that the first in-process call is not ~200 ms
    slower than the rest (the plugin daemon does this at start; a long-lived runtime may too)."""
    from k8sx.cni.install import PLUGINS
    from k8sx.net.link import Netlink

    for module in PLUGINS.values():
        _load(module)
    Netlink().close()


def invoke_inprocess(module: str, env: Mapping[str, str], stdin: bytes) -> bytes:
    """Run plugin ``module`` in this process; return what its executable would print on stdout.

    Raises :class:`CNIError` exactly where the executable would print an error object. The
    calling thread's network namespace is the host side (the runtime's, or the daemon's caller's).
    """
    plugin = _load(module)
    args = parse(env, stdin)
    try:
        return _dispatch(plugin, args)
    except CNIError:
        raise
    except OSError as exc:
        raise CNIError(ERR_IO_FAILURE, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # a plugin bug still ends as an error object, never a traceback
        raise CNIError(ERR_INTERNAL, f"{type(exc).__name__}: {exc}") from exc


def run(module: str, env: Mapping[str, str], stdin: bytes) -> tuple[bytes, int]:
    """The executable's contract: (stdout bytes, exit status); an error becomes the error object."""
    try:
        return invoke_inprocess(module, env, stdin), 0
    except CNIError as exc:
        version = CURRENT_VERSION
        try:
            conf = json.loads(stdin)
            if isinstance(conf, dict) and isinstance(conf.get("cniVersion"), str) and conf["cniVersion"]:
                version = conf["cniVersion"]
        except ValueError:
            pass
        return encode(exc.to_dict(version)), 1

