"""User and group resolution inside an image's rootfs (``/etc/passwd``, ``/etc/group``).

Why it exists: CRI gives a uid, a user name or nothing (then the image's ``USER``), and the OCI spec
wants numbers: uid, gid and the additional gids. The files are read from the container's rootfs,
which comes from an image we don't trust, so every path is resolved *inside* the rootfs: a symlinked
``/etc/passwd -> /../../host/file`` stays confined to the rootfs, as a chroot would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from k8sx.errors import K8sxError

MAX_SYMLINKS = 40


def resolve_in_root(root: str, path: str) -> str:
    """The host path of ``path`` as seen from a chroot at ``root``: symlinks are followed with ``root``
    as ``/`` and ``..`` never climbs above it. The result may not exist (the last parts are kept)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise K8sxError(f"{path}: too many levels of symbolic links in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return os.path.join(root, *done)


@dataclass
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = "/"


@dataclass
class GroupEntry:
    name: str
    gid: int
    members: list[str] = field(default_factory=list)


def _lines(root: str, path: str) -> list[list[str]]:
    host = resolve_in_root(root, path)
    try:
        with open(host, encoding="utf-8", errors="replace") as f:
            text = f.read(4 << 20)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split(":"))
    return out


def read_passwd(root: str) -> list[PasswdEntry]:
    entries = []
    for f in _lines(root, "/etc/passwd"):
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            entries.append(PasswdEntry(f[0], int(f[2]), int(f[3]), f[5] if len(f) > 5 else "/"))
    return entries


def read_group(root: str) -> list[GroupEntry]:
    entries = []
    for f in _lines(root, "/etc/group"):
        if len(f) >= 3 and f[2].isdigit():
            members = [m for m in (f[3].split(",") if len(f) > 3 else []) if m]
            entries.append(GroupEntry(f[0], int(f[2]), members))
    return entries


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: list[int]
    name: str = ""
    home: str = "/"


def resolve_user(root: str, user: str, supplemental_groups: list[int] | None = None) -> ResolvedUser:
    """Resolve a Docker-style user string (``""``, ``name``, ``uid``, ``name:group``, ``uid:gid``...)
    in ``root``. As containerd: a numeric uid need not exist (gid 0 then); a name must. The
    additional gids are the primary gid, the groups listing the user as a member, then
    ``supplemental_groups`` (CRI's), without duplicates."""
    user_part, _, group_part = (user or "0").partition(":")
    passwd = read_passwd(root)
    entry: PasswdEntry | None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in passwd if e.uid == uid), None)
    else:
        entry = next((e for e in passwd if e.name == user_part), None)
        if entry is None:
            raise K8sxError(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = entry.uid
    gid = entry.gid if entry else 0
    groups = read_group(root) if (group_part or entry) else []
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((g for g in groups if g.name == group_part), None)
            if g is None:
                raise K8sxError(f"group {group_part!r} not found in the image's /etc/group")
            gid = g.gid
    gids = [gid]
    if entry is not None:
        gids += [g.gid for g in groups if entry.name in g.members]
    gids += list(supplemental_groups or [])
    seen: set[int] = set()
    additional = [g for g in gids if not (g in seen or seen.add(g))]
    return ResolvedUser(uid, gid, additional, entry.name if entry else "", entry.home if entry else "/")
