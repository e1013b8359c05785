"""flannel: the meta-plugin that turns flannel's ``subnet.env`` into a bridge + host-local netconf.

Why its own implementation: it must render the delegate netconf exactly as flannel-io/cni-plugin
does (same keys, same defaults, same bytes in ``<dataDir>/<containerID>``) so that a node can
switch between the two, with DEL reading that file back. The delegate's default types follow the
name this plugin was installed under: as ``flannel`` (``--reference-names``) it delegates to
``bridge`` and ``host-local`` like the original; as ``k8sx-flannel`` to ``k8sx-bridge`` and
``k8sx-host-local``. A ``type`` in ``delegate`` or ``ipam`` always wins.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any

from k8sx.cni.skel import CmdArgs
from k8sx.cni.types import (
    ERR_INVALID_NETWORK_CONFIG,
    ERR_IO_FAILURE,
    ERR_PLUGIN_NOT_AVAILABLE,
    ERR_TRY_AGAIN_LATER,
    CNIError,
    convert_result,
    go_json,
)

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
K8SX_PREFIX = "k8sx-"


@dataclass
class SubnetEnv:
    networks: list[str] = field(default_factory=list)
    subnet: str | None = None
    ip6_networks: list[str] = field(default_factory=list)
    ip6_subnet: str | None = None
    mtu: int | None = None
    ipmasq: bool | None = None

    def missing(self) -> str:
        m = []
        if not self.networks and not self.ip6_networks:
            m += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
        if self.subnet is None and self.ip6_subnet is None:
            m += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
        if self.mtu is None:
            m.append("FLANNEL_MTU")
        if self.ipmasq is None:
            m.append("FLANNEL_IPMASQ")
        return ", ".join(m)


def _net(path: str, key: str, value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"{path}: invalid {key} {value!r}") from None


def load_subnet_env(path: str) -> SubnetEnv:
    """Parse flanneld's ``subnet.env`` as the reference plugin does; missing keys are an error."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise CNIError(ERR_TRY_AGAIN_LATER, f"open {path}: no such file or directory",
                       "is flanneld (or `k8sx flannel run`) running on this node?") from None
    except OSError as exc:
        raise CNIError(ERR_IO_FAILURE, f"open {path}: {exc.strerror}") from None
    env = SubnetEnv()
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key == "FLANNEL_NETWORK":
            for part in value.split(","):
                if part.strip() and (n := _net(path, key, part)) not in env.networks:
                    env.networks.append(n)
        elif key == "FLANNEL_IPV6_NETWORK":
            for part in value.split(","):
                if part.strip() and (n := _net(path, key, part)) not in env.ip6_networks:
                    env.ip6_networks.append(n)
        elif key == "FLANNEL_SUBNET":
            env.subnet = _net(path, key, value)
        elif key == "FLANNEL_IPV6_SUBNET":
            env.ip6_subnet = _net(path, key, value)
        elif key == "FLANNEL_MTU":
            try:
                env.mtu = int(value)
            except ValueError:
                raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"{path}: invalid FLANNEL_MTU {value!r}") from None
        elif key == "FLANNEL_IPMASQ":
            env.ipmasq = value == "true"
    missing = env.missing()
    if missing:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"{path} is missing {missing}")
    return env


def _prefix(args: CmdArgs) -> str:
    own = args.conf.get("type")
    return K8SX_PREFIX if isinstance(own, str) and own.startswith(K8SX_PREFIX) else ""


def _paths(args: CmdArgs) -> tuple[str, str]:
    subnet_file = args.require("subnetFile", str, None) or DEFAULT_SUBNET_FILE
    data_dir = args.require("dataDir", str, None) or DEFAULT_DATA_DIR
    return subnet_file, data_dir


def render_delegate(args: CmdArgs, env: SubnetEnv) -> dict[str, Any]:
    """The delegate netconf flannel-io/cni-plugin would write for this netconf and subnet.env."""
    delegate = args.require("delegate", dict, {})
    if "type" in delegate and not isinstance(delegate["type"], str):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "'delegate' field seems to be invalid: 'type' must be a string")
    if "name" in delegate:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "'delegate' dictionary must not have 'name' field, "
                       "it'll be set by flannel")
    if "ipam" in delegate:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "'delegate' dictionary must not have 'ipam' field, "
                       "it'll be set by flannel")
    prefix = _prefix(args)
    d = json.loads(json.dumps(delegate))
    d["name"] = args.name
    d.setdefault("type", prefix + "bridge")
    d.setdefault("ipMasq", not env.ipmasq)
    d.setdefault("mtu", env.mtu)
    if d["type"] in ("bridge", K8SX_PREFIX + "bridge"):
        d.setdefault("isGateway", True)
    if args.conf.get("cniVersion"):
        d["cniVersion"] = args.conf["cniVersion"]
    ipam = json.loads(json.dumps(args.require("ipam", dict, {})))
    ipam.setdefault("type", prefix + "host-local")
    ranges = []
    if env.subnet:
        ranges.append([{"subnet": env.subnet}])
    if env.ip6_subnet:
        ranges.append([{"subnet": env.ip6_subnet}])
    ipam["ranges"] = ranges
    routes = list(ipam.get("routes") or [])
    routes += [{"dst": n} for n in env.networks] + [{"dst": n} for n in env.ip6_networks]
    ipam["routes"] = routes
    d["ipam"] = ipam
    if args.runtime_config:
        d["runtimeConfig"] = args.runtime_config
    return d


def _scratch(data_dir: str, container_id: str) -> str:
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"invalid container ID {container_id!r}")
    return os.path.join(data_dir, container_id)


def cmd_add(args: CmdArgs) -> dict[str, Any]:
    subnet_file, data_dir = _paths(args)
    delegate = render_delegate(args, load_subnet_env(subnet_file))
    data = go_json(delegate)
    path = _scratch(data_dir, args.container_id)
    try:
        os.makedirs(data_dir, 0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CNIError(ERR_IO_FAILURE, f"failed to save the delegate netconf to {path}", str(exc)) from None
    result = args.delegate(delegate["type"], "ADD", data)
    if not result:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"delegate {delegate['type']} returned no result")
    return result


def _saved(args: CmdArgs) -> tuple[str, bytes, dict[str, Any]] | None:
    _, data_dir = _paths(args)
    path = _scratch(data_dir, args.container_id)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    try:
        conf = json.loads(data)
    except ValueError:
        return path, data, {}
    return path, data, conf if isinstance(conf, dict) else {}


def cmd_del(args: CmdArgs) -> None:
    saved = _saved(args)
    if saved is None:
        return  # already cleaned up
    path, data, conf = saved
    if isinstance(conf.get("type"), str) and conf["type"]:
        args.delegate(conf["type"], "DEL", data)
    os.unlink(path)


def cmd_check(args: CmdArgs) -> None:
    """Unlike the reference (a no-op), check through the delegate with the saved netconf."""
    saved = _saved(args)
    if saved is None or not isinstance(saved[2].get("type"), str):
        return
    conf = dict(saved[2])
    if args.prev_result is not None:
        conf["prevResult"] = convert_result(args.prev_result, conf.get("cniVersion") or args.cni_version)
    args.delegate(conf["type"], "CHECK", go_json(conf))


def cmd_status(args: CmdArgs) -> None:
    subnet_file, _ = _paths(args)
    try:
        load_subnet_env(subnet_file)
    except CNIError as exc:
        raise CNIError(ERR_PLUGIN_NOT_AVAILABLE, exc.msg, exc.details) from None


def cmd_gc(args: CmdArgs) -> None:
    """Collect through the delegate, rendered as for ADD, with the valid attachments."""
    subnet_file, _ = _paths(args)
    delegate = render_delegate(args, load_subnet_env(subnet_file))
    delegate["cni.dev/valid-attachments"] = args.conf.get("cni.dev/valid-attachments") or []
    args.delegate(delegate["type"], "GC", go_json(delegate))
