"""libcni's result cache: ``<cacheDir>/results/<network>-<containerID>-<ifname>``.

Why: CHECK and DEL hand the ADD result back to the plugins as ``prevResult``, and GC finds stale
attachments by listing this directory. The file format, path and modes are libcni's exactly, so
containerd, cnitool and k8sx can each CHECK/DEL/GC attachments the others made.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from k8sx.cni.types import ERR_IO_FAILURE, CNIError, convert_result, go_json

DEFAULT_CACHE_DIR = "/var/lib/cni"
KIND_V1 = "cniCacheV1"


def cache_path(cache_dir: str, network: str, container_id: str, ifname: str) -> str:
    if not network or not container_id or not ifname:
        raise CNIError(ERR_IO_FAILURE, "cache file path requires network name, container ID and interface name",
                       f"network={network!r} containerID={container_id!r} ifname={ifname!r}")
    return os.path.join(cache_dir or DEFAULT_CACHE_DIR, "results", f"{network}-{container_id}-{ifname}")


def _go_struct_json(fields: list[tuple[str, Any]]) -> bytes:
    """A Go struct marshalled: fields in declaration order, map values with sorted keys."""
    return b"{" + b",".join(json.dumps(k).encode() + b":" + go_json(v) for k, v in fields) + b"}"


@dataclass
class CacheEntry:
    """One cache file: what libcni's ``cachedInfo`` holds."""

    container_id: str
    ifname: str
    network: str
    config: bytes
    result: dict[str, Any] | None
    netns: str = ""
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False

    def encode(self) -> bytes:
        fields: list[tuple[str, Any]] = [
            ("kind", KIND_V1),
            ("containerId", self.container_id),
            ("config", base64.b64encode(self.config).decode()),
            ("ifName", self.ifname),
            ("networkName", self.network),
        ]
        if self.netns:
            fields.append(("netns", self.netns))
        if self.cni_args:
            fields.append(("cniArgs", [list(p) for p in self.cni_args]))
        if self.capability_args:
            fields.append(("capabilityArgs", self.capability_args))
        if self.result:
            fields.append(("result", self.result))
        return _go_struct_json(fields)


def _makedirs_0700(path: str) -> None:
    """``mkdir -p`` creating every missing level 0700, as Go's ``os.MkdirAll(path, 0700)`` does
    (Python's ``makedirs`` applies the mode only to the last level)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)


def write(cache_dir: str, entry: CacheEntry) -> str:
    """Write ``entry`` (directories 0700, file 0600, replaced atomically); returns the path."""
    path = cache_path(cache_dir, entry.network, entry.container_id, entry.ifname)
    directory = os.path.dirname(path)
    try:
        _makedirs_0700(directory)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(entry.encode())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise CNIError(ERR_IO_FAILURE, f'failed to set network "{entry.network}" cached result',
                       f"{path}: {e.strerror}") from None
    return path


def decode(data: bytes) -> CacheEntry | None:
    """Parse a cache file: ``cniCacheV1``, or a bare legacy result (None if neither)."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if obj.get("kind") != KIND_V1:
        return CacheEntry(container_id="", ifname="", network="", config=b"", result=obj, legacy=True)
    try:
        config = base64.b64decode(obj.get("config") or "", validate=True)
    except (binascii.Error, TypeError):
        config = b""
    args = obj.get("cniArgs") or []
    return CacheEntry(
        container_id=str(obj.get("containerId", "")), ifname=str(obj.get("ifName", "")),
        network=str(obj.get("networkName", "")), config=config,
        result=obj.get("result") if isinstance(obj.get("result"), dict) else None,
        netns=str(obj.get("netns", "") or ""),
        cni_args=[(str(p[0]), str(p[1])) for p in args if isinstance(p, list) and len(p) == 2],
        capability_args=obj.get("capabilityArgs") if isinstance(obj.get("capabilityArgs"), dict) else {},
    )


def read(cache_dir: str, network: str, container_id: str, ifname: str) -> CacheEntry | None:
    """The entry of one attachment, or None when there is none (or it cannot be read)."""
    try:
        with open(cache_path(cache_dir, network, container_id, ifname), "rb") as f:
            data = f.read()
    except OSError:
        return None
    return decode(data)


def cached_result(cache_dir: str, network: str, container_id: str, ifname: str,
                  cni_version: str) -> dict[str, Any] | None:
    """The cached ADD result converted to ``cni_version`` (libcni's ``getCachedResult``)."""
    entry = read(cache_dir, network, container_id, ifname)
    if entry is None or not entry.result:
        return None
    try:
        return convert_result(entry.result, cni_version)
    except (CNIError, KeyError, ValueError, TypeError) as e:
        raise CNIError(ERR_IO_FAILURE, f'failed to convert cached result of network "{network}" to '
                       f'config version "{cni_version}"', str(e)) from None


def remove(cache_dir: str, network: str, container_id: str, ifname: str) -> None:
    """Remove an attachment's entry; a missing one is fine."""
    with contextlib.suppress(OSError, CNIError):
        os.unlink(cache_path(cache_dir, network, container_id, ifname))


def attachments(cache_dir: str, container_id: str = "") -> list[CacheEntry]:
    """All ``cniCacheV1`` entries (libcni's ``GetCachedAttachments``), in file-name order."""
    directory = os.path.join(cache_dir or DEFAULT_CACHE_DIR, "results")
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        if name.startswith(".tmp-"):
            continue
        if container_id:
            pos = name.find(f"-{container_id}-")
            if pos <= 0 or pos + len(container_id) + 2 >= len(name):
                continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                entry = decode(f.read())
        except OSError:
            continue
        if entry is None or entry.legacy or not entry.ifname or not entry.network:
            continue
        if container_id and entry.container_id != container_id:
            continue
        out.append(entry)
    return out
