"""Network configuration loading with libcni's rules (``libcni/conf.go``).

Why: which file defines a network, in which order files are considered, how a single ``.conf`` is
promoted to a list and which cniVersion a list runs at decide what every plugin receives; a runtime
that differs from libcni here attaches pods differently from containerd on the same node. Parse
errors name the file, which libcni does not.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from k8sx.cni.types import (
    ERR_DECODING_FAILURE,
    ERR_INVALID_ENVIRONMENT_VARIABLES,
    ERR_INVALID_NETWORK_CONFIG,
    ERR_UNKNOWN_CONTAINER,
    SUPPORTED_VERSIONS,
    CNIError,
    check_supported,
    parse_version,
)

DEFAULT_CONF_DIR = "/etc/cni/net.d"
LIST_EXTENSIONS = (".conflist",)
SINGLE_EXTENSIONS = (".conf", ".json")

_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
MAX_IFNAME = 15


@dataclass
class NetworkConfig:
    """One plugin entry of a list: its raw JSON object (key order kept) and the fields libcni reads."""

    raw: dict[str, Any]

    @property
    def type(self) -> str:
        return self.raw["type"]

    @property
    def name(self) -> str:
        return self.raw.get("name") or ""

    @property
    def capabilities(self) -> dict[str, bool]:
        caps = self.raw.get("capabilities")
        return {k: v for k, v in caps.items() if v is True} if isinstance(caps, dict) else {}


@dataclass
class NetworkConfigList:
    """A network: name, the cniVersion the runner speaks to every plugin, and the plugin chain."""

    name: str
    cni_version: str
    plugins: list[NetworkConfig]
    bytes: bytes
    disable_check: bool = False
    disable_gc: bool = False
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        return [p.type for p in self.plugins]


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _decode(data: bytes, source: str | None, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise CNIError(ERR_DECODING_FAILURE, f"error parsing {what}{_where(source)}: {e}") from None
    if not isinstance(obj, dict):
        raise CNIError(ERR_DECODING_FAILURE, f"error parsing {what}{_where(source)}: not a JSON object")
    return obj


def conf_from_dict(obj: dict[str, Any], source: str | None = None, index: int | None = None) -> NetworkConfig:
    where = f"plugin {index}" if index is not None else "configuration"
    if not isinstance(obj, dict):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"error parsing {where}{_where(source)}: not a JSON object")
    if not isinstance(obj.get("type"), str) or not obj["type"]:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"error parsing {where}{_where(source)}: missing 'type'")
    return NetworkConfig(raw=obj)


def _pick_version(obj: dict[str, Any], source: str | None) -> str:
    """``cniVersion``, or the highest entry of spec 1.1's ``cniVersions`` that k8sx implements."""
    version = obj.get("cniVersion", "")
    if not isinstance(version, str):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                       f"error parsing configuration list{_where(source)}: invalid cniVersion type")
    versions = obj.get("cniVersions")
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                           f"error parsing configuration list{_where(source)}: cniVersions must be a list of strings")
        usable = [v for v in [*versions, version] if v and v in SUPPORTED_VERSIONS]
        if usable:
            version = max(usable, key=parse_version)
    if version:
        check_supported(version, f'network "{obj.get("name", "")}"' + (f" ({source})" if source else ""))
    return version


def conf_list_from_bytes(data: bytes, source: str | None = None) -> NetworkConfigList:
    """A ``.conflist`` (libcni's ``ConfListFromBytes``, plus version checking and file names)."""
    obj = _decode(data, source, "configuration list")
    name = obj.get("name")
    if name is None:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"error parsing configuration list{_where(source)}: no name")
    if not isinstance(name, str):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                       f"error parsing configuration list{_where(source)}: invalid name type")
    version = _pick_version(obj, source)
    flags = {}
    for key in ("disableCheck", "disableGC"):
        value = obj.get(key, False)
        if not isinstance(value, bool):
            raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                           f"error parsing configuration list{_where(source)}: invalid {key} type")
        flags[key] = value
    plugins = obj.get("plugins")
    if plugins is None:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                       f"error parsing configuration list{_where(source)}: no 'plugins' key")
    if not isinstance(plugins, list):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                       f"error parsing configuration list{_where(source)}: invalid 'plugins' type")
    if not plugins:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG,
                       f"error parsing configuration list{_where(source)}: no plugins in list")
    return NetworkConfigList(name=name, cni_version=version,
                             plugins=[conf_from_dict(p, source, i) for i, p in enumerate(plugins)],
                             bytes=data, disable_check=flags["disableCheck"], disable_gc=flags["disableGC"],
                             source=source, raw=obj)


def conf_from_bytes(data: bytes, source: str | None = None) -> NetworkConfig:
    """A single-plugin ``.conf``/``.json`` file."""
    return conf_from_dict(_decode(data, source, "configuration"), source)


def conf_list_from_conf(conf: NetworkConfig, source: str | None = None) -> NetworkConfigList:
    """Promote a single config to a one-plugin list, as libcni's ``ConfListFromConf`` does."""
    raw = {"cniVersion": conf.raw.get("cniVersion", ""), "name": conf.name, "plugins": [conf.raw]}
    data = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    return conf_list_from_bytes(data, source)


def conf_files(conf_dir: str, extensions: Sequence[str]) -> list[str]:
    """The regular files of ``conf_dir`` with one of ``extensions``, in lexical order."""
    try:
        entries = list(os.scandir(conf_dir))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"cannot read {conf_dir}: {e.strerror}") from None
    return sorted(e.path for e in entries if not e.is_dir() and os.path.splitext(e.name)[1] in extensions)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"error reading {path}: {e.strerror}") from None


def _dirs(conf_dirs: str | Sequence[str]) -> list[str]:
    return [conf_dirs] if isinstance(conf_dirs, str) else list(conf_dirs)


def load_network(name: str, conf_dirs: str | Sequence[str] = DEFAULT_CONF_DIR) -> NetworkConfigList:
    """The network ``name`` (libcni's ``LoadConfList``): ``.conflist`` files first, in lexical order,
    then single ``.conf``/``.json`` files, promoted to a list. With several directories, the first
    directory that defines it wins. A file that fails to parse before the match is an error, as in
    libcni (which would otherwise silently pick a later definition).
    """
    dirs = _dirs(conf_dirs)
    any_files = False
    for conf_dir in dirs:
        lists = conf_files(conf_dir, LIST_EXTENSIONS)
        singles = conf_files(conf_dir, SINGLE_EXTENSIONS)
        any_files = any_files or bool(lists or singles)
        for path in lists:
            netlist = conf_list_from_bytes(_read(path), path)
            if netlist.name == name:
                return netlist
        for path in singles:
            conf = conf_from_bytes(_read(path), path)
            if conf.name == name:
                return conf_list_from_conf(conf, path)
    where = ", ".join(dirs)
    if not any_files:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, f"no net configurations found in {where}")
    raise CNIError(ERR_INVALID_NETWORK_CONFIG, f'no net configuration with name "{name}" in {where}')


@dataclass
class ConfFileEntry:
    """One configuration file as ``k8sx cni ls`` shows it: the network it defines, or why it is broken."""

    path: str
    network: NetworkConfigList | None
    error: str | None = None


def list_networks(conf_dirs: str | Sequence[str] = DEFAULT_CONF_DIR) -> list[ConfFileEntry]:
    """Every configuration file in libcni's search order, each parsed (a broken one carries its error)."""
    out: list[ConfFileEntry] = []
    for conf_dir in _dirs(conf_dirs):
        for path in conf_files(conf_dir, LIST_EXTENSIONS) + conf_files(conf_dir, SINGLE_EXTENSIONS):
            try:
                data = _read(path)
                if path.endswith(LIST_EXTENSIONS):
                    net = conf_list_from_bytes(data, path)
                else:
                    net = conf_list_from_conf(conf_from_bytes(data, path), path)
                out.append(ConfFileEntry(path, net))
            except CNIError as e:
                out.append(ConfFileEntry(path, None, e.msg))
    return out


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CNIError(ERR_UNKNOWN_CONTAINER, "missing containerID")
    if not _VALID_NAME.match(container_id):
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, "invalid characters in containerID", container_id)


def validate_network_name(name: str) -> None:
    if not name:
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "missing network name")
    if not _VALID_NAME.match(name):
        raise CNIError(ERR_INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def validate_ifname(ifname: str) -> None:
    """The kernel's rules for an interface name (libcni's ``ValidateInterfaceName``)."""
    if not ifname:
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, "interface name is empty")
    if len(ifname.encode()) > MAX_IFNAME:
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, "interface name is too long",
                       f"interface name should be less than {MAX_IFNAME + 1} characters")
    if ifname in (".", ".."):
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(ERR_INVALID_ENVIRONMENT_VARIABLES, "interface name contains / or : or whitespace characters")
