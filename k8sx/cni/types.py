"""CNI spec types shared by the runner and the plugins: the error object, the spec versions, and
result conversion between them.

Why one module: the runner (libcni's role) and k8sx's own plugins (skel's role) must agree on the
wire format of errors and results, and version conversion is where runners and plugins of
different spec versions meet. Keeping it pure (stdlib only) lets plugins import it cheaply.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from typing import Any

from k8sx.errors import K8sxError

# The spec's well-known error codes (SPEC.md, "Error"), plus libcni's catch-all.
ERR_INCOMPATIBLE_CNI_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENVIRONMENT_VARIABLES = 4
ERR_IO_FAILURE = 5
ERR_DECODING_FAILURE = 6
ERR_INVALID_NETWORK_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_PLUGIN_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
ERR_INTERNAL = 999  # what libcni/skel report for an error that carries no spec code

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"

# Result formats: 0.1.0/0.2.0 (ip4/ip6 objects), 0.3.x/0.4.0 (ips with "version"), 1.x (no "version").
_LEGACY = ("0.1.0", "0.2.0")
_V04 = ("0.3.0", "0.3.1", "0.4.0")
_V1 = ("1.0.0", "1.1.0")


class CNIError(K8sxError):
    """A CNI error object (``code``, ``msg``, ``details``), raised by the runner and by plugins.

    ``plugin`` names the plugin that reported it (when known), so the CLI can say which link of a
    chain failed. ``message`` is the one-line human form: ``<plugin>: <msg> (<details>), code N``.
    """

    def __init__(self, code: int, msg: str, details: str = "", *, plugin: str | None = None,
                 hint: str | None = None) -> None:
        self.code = int(code)
        self.msg = msg
        self.details = details
        self.plugin = plugin
        super().__init__(self._format(), hint=hint)

    def _format(self) -> str:
        text = f"{self.plugin}: {self.msg}" if self.plugin else self.msg
        if self.details:
            text += f" ({self.details})"
        return f"{text}, code {self.code}"

    def with_plugin(self, plugin: str) -> CNIError:
        """Name the plugin (once: the innermost plugin that failed keeps the name)."""
        if self.plugin is None:
            self.plugin = plugin
            self.message = self._format()
            self.args = (self.message,)
        return self

    def to_dict(self, cni_version: str = CURRENT_VERSION) -> dict[str, Any]:
        """The spec's error object, as a plugin prints it on stdout."""
        d: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            d["details"] = self.details
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], plugin: str | None = None) -> CNIError:
        code = d.get("code")
        return cls(code if isinstance(code, int) and not isinstance(code, bool) else ERR_INTERNAL,
                   str(d.get("msg", "")), str(d.get("details", "") or ""), plugin=plugin)

    def __str__(self) -> str:
        return self.message


def parse_version(v: str) -> tuple[int, int, int]:
    """``"1.0.0"`` -> (1, 0, 0); a malformed version is an incompatible-version error."""
    if not isinstance(v, str) or not v:
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, "invalid version: the version is empty")
    parts = v.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, f'invalid version "{v}"', "expected MAJOR.MINOR.PATCH")
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_gte(v: str, other: str) -> bool:
    return parse_version(v) >= parse_version(other)


def check_supported(v: str, where: str = "") -> str:
    """Return ``v`` if k8sx speaks it; otherwise a clear incompatible-version error."""
    parse_version(v)
    if v not in SUPPORTED_VERSIONS:
        place = f" in {where}" if where else ""
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, f'unsupported CNI version "{v}"{place}',
                       "supported: " + ", ".join(SUPPORTED_VERSIONS))
    return v


def _family(addr: str) -> str:
    """``"4"`` or ``"6"`` for an address in CIDR form (or a bare address)."""
    return "4" if ipaddress.ip_interface(addr).version == 4 else "6"


def _route_family(route: dict[str, Any]) -> str:
    return "4" if ipaddress.ip_network(route.get("dst", "0.0.0.0/0"), strict=False).version == 4 else "6"


def _legacy_to_v04(result: dict[str, Any]) -> dict[str, Any]:
    """0.1.0/0.2.0 (``ip4``/``ip6``) -> the 0.4.0 shape (ips with ``version``, no interfaces)."""
    out: dict[str, Any] = {}
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for key, fam in (("ip4", "4"), ("ip6", "6")):
        ipc = result.get(key)
        if not ipc:
            continue
        entry: dict[str, Any] = {"version": fam, "address": ipc["ip"]}
        if ipc.get("gateway"):
            entry["gateway"] = ipc["gateway"]
        ips.append(entry)
        routes.extend(copy.deepcopy(ipc.get("routes") or []))
    if ips:
        out["ips"] = ips
    if routes:
        out["routes"] = routes
    out["dns"] = copy.deepcopy(result.get("dns") or {})
    return out


def _v04_to_legacy(result: dict[str, Any]) -> dict[str, Any]:
    """The 0.4.0 shape -> 0.2.0: the first address of each family, routes sorted by family."""
    out: dict[str, Any] = {}
    for ipc in result.get("ips") or []:
        key = "ip4" if ipc.get("version", _family(ipc["address"])) == "4" else "ip6"
        if key in out:
            continue
        entry: dict[str, Any] = {"ip": ipc["address"]}
        if ipc.get("gateway"):
            entry["gateway"] = ipc["gateway"]
        out[key] = entry
    if not out:
        raise CNIError(ERR_INCOMPATIBLE_CNI_VERSION, "cannot convert result to 0.2.0: no valid IP addresses")
    for route in result.get("routes") or []:
        key = "ip4" if _route_family(route) == "4" else "ip6"
        if key in out:
            out[key].setdefault("routes", []).append(copy.deepcopy(route))
    out["dns"] = copy.deepcopy(result.get("dns") or {})
    return out


def _v1_to_v04(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key == "cniVersion":
            continue
        if key == "ips":
            ips = []
            for ipc in value or []:
                entry = {"version": _family(ipc["address"])}
                entry.update({k: copy.deepcopy(v) for k, v in ipc.items() if k != "version"})
                ips.append(entry)
            out["ips"] = ips
        elif key == "interfaces":  # 0.4.0 interfaces know only name, mac and sandbox
            out["interfaces"] = [{k: v for k, v in i.items() if k in ("name", "mac", "sandbox")}
                                 for i in value or []]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _v04_to_v1(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key == "cniVersion":
            continue
        if key == "ips":
            out["ips"] = [{k: copy.deepcopy(v) for k, v in ipc.items() if k != "version"} for ipc in value or []]
        else:
            out[key] = copy.deepcopy(value)
    return out


def convert_result(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """Convert a result (any supported version, per its own ``cniVersion``) to ``to_version``.

    A result without ``cniVersion`` is 0.1.0, as the spec says. The input is not modified; key
    order is kept where the format does not change.
    """
    check_supported(to_version, "result conversion target")
    from_version = result.get("cniVersion") or "0.1.0"
    check_supported(from_version, "result")
    if from_version == to_version:
        return copy.deepcopy(result)
    body = {k: v for k, v in result.items() if k != "cniVersion"}
    # Normalise to the 0.4.0 shape, then render the target.
    if from_version in _LEGACY:
        mid = _legacy_to_v04(body)
    elif from_version in _V1:
        mid = _v1_to_v04(body)
    else:
        mid = copy.deepcopy(body)
    if to_version in _LEGACY:
        out = _v04_to_legacy(mid)
    elif to_version in _V1:
        out = _v04_to_v1(mid)
    else:
        out = mid
    return {"cniVersion": to_version, **out}


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def go_json(obj: Any) -> bytes:
    """``obj`` encoded as Go's ``json.Marshal`` encodes a ``map[string]interface{}``.

    Compact, keys sorted at every level, non-ASCII kept as UTF-8, and ``<``, ``>``, ``&``, U+2028 and
    U+2029 escaped. libcni builds every plugin's stdin and its cache file this way, so files and
    stdin written by k8sx are byte-for-byte what containerd or cnitool write.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text).encode()
