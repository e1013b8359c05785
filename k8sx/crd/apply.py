"""``crd apply`` and ``crd diff``: CRDs from files against the cluster of the kubeconfig.

Apply is create-or-replace (the file is the whole truth, like ``kubectl replace``/server-side
apply), not kubectl's client-side three-way merge: that one stores the CRD in a
``last-applied-configuration`` annotation limited to 256 KiB, which large generated CRDs exceed.
A server-side dry run (``?dryRun=All``) lets the API server validate and default without storing;
diff compares the live object with what the server would store (its dry-run answer), as
``kubectl diff`` does, ignoring the fields the server owns.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from k8sx.crd.cluster import CRDS, SERVER_OWNED_METADATA, request
from k8sx.errors import K8sxError, UsageError
from k8sx.kube import KubeConnection

FIELD_MANAGER = "k8sx"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
DRY_RUN = ("none", "server", "client")


@dataclass
class Outcome:
    """What apply did (or would do) to one CRD."""

    name: str
    action: str  # created | configured | unchanged
    dry_run: str
    object: dict[str, Any]

    def line(self) -> str:
        suffix = f" ({self.dry_run} dry run)" if self.dry_run != "none" else ""
        return f"customresourcedefinition.apiextensions.k8s.io/{self.name} {self.action}{suffix}"


def _name(crd: dict[str, Any]) -> str:
    name = (crd.get("metadata") or {}).get("name")
    if not name:
        raise UsageError("a CRD without metadata.name cannot be applied")
    return str(name)


def normalize(obj: dict[str, Any] | None) -> dict[str, Any]:
    """The object without what the server owns (status, uid, resourceVersion, managedFields, ...)."""
    if not obj:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_OWNED_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


def get(conn: KubeConnection, name: str) -> dict[str, Any] | None:
    status, data = request(conn, "GET", f"{CRDS}/{name}", what=f"reading CRD {name}")
    if status == 404:
        return None
    if not 200 <= status < 300 or not isinstance(data, dict):
        raise K8sxError(f"reading CRD {name}: the API server answered {status}: {_message(data)}")
    return data


def _message(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or data)
    return str(data)[:300]


def _write(conn: KubeConnection, crd: dict[str, Any], live: dict[str, Any] | None, dry_run: bool) -> dict[str, Any]:
    name = _name(crd)
    query = [("fieldManager", FIELD_MANAGER)] + ([("dryRun", "All")] if dry_run else [])
    if live is None:
        status, data = request(conn, "POST", CRDS, crd, query, what=f"creating CRD {name}")
    else:
        body = {**crd, "metadata": {**(crd.get("metadata") or {}),
                                    "resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}}
        if body["metadata"]["resourceVersion"] is None:
            del body["metadata"]["resourceVersion"]
        status, data = request(conn, "PUT", f"{CRDS}/{name}", body, query, what=f"replacing CRD {name}")
    if status == 422 or status == 400:
        raise K8sxError(f"CRD {name}: the API server rejected it: {_message(data)}")
    if status == 409:
        raise K8sxError(f"CRD {name}: conflict (changed meanwhile?): {_message(data)}")
    if not 200 <= status < 300:
        raise K8sxError(f"CRD {name}: the API server answered {status}: {_message(data)}")
    return data if isinstance(data, dict) else crd


def apply(conn: KubeConnection, crds: list[dict[str, Any]], dry_run: str = "none") -> list[Outcome]:
    """Create or replace each CRD; ``dry_run`` none, server (validated, not stored) or client (no writes)."""
    if dry_run not in DRY_RUN:
        raise UsageError(f"--dry-run must be one of {', '.join(DRY_RUN)}")
    out = []
    for crd in crds:
        name = _name(crd)
        live = get(conn, name)
        if live is not None and _same(normalize(live), normalize(crd)):
            out.append(Outcome(name, "unchanged", dry_run, live))
            continue
        if live is not None:
            _check_stored_versions(name, live, crd)
        action = "created" if live is None else "configured"
        result = crd if dry_run == "client" else _write(conn, crd, live, dry_run == "server")
        out.append(Outcome(name, action, dry_run, result))
    return out


def _check_stored_versions(name: str, live: dict[str, Any], desired: dict[str, Any]) -> None:
    """The server refuses to drop a version that objects may still be stored in (VAL:283): say so
    before sending, with what to do."""
    stored = (live.get("status") or {}).get("storedVersions") or []
    keep = {v.get("name") for v in (desired.get("spec") or {}).get("versions") or [] if isinstance(v, dict)}
    missing = [v for v in stored if v not in keep]
    if missing:
        raise K8sxError(f"CRD {name}: [versions.stored] version(s) {', '.join(missing)} are in "
                        "status.storedVersions, so they must stay in spec.versions",
                        hint="migrate the stored objects to the storage version, then remove the version "
                             "from status.storedVersions (the CRD's status subresource), then apply")


def _same(live: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Desired is already in place: every field it sets has that value live (server defaults ignored)."""
    return _covers(live, desired)


def _covers(live: Any, desired: Any) -> bool:
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and _covers(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            _covers(a, b) for a, b in zip(live, desired, strict=True))
    return live == desired


def diff(conn: KubeConnection, crds: list[dict[str, Any]], server_dry_run: bool = True) -> list[tuple[str, str]]:
    """(name, unified diff of live -> what would be stored) per CRD; an empty diff means no change.

    With ``server_dry_run`` the right side is the server's dry-run answer (defaults filled in, as
    ``kubectl diff``); otherwise the file itself, compared with the live object's fields it sets.
    """
    from k8sx.crd.documents import dump

    out = []
    for crd in crds:
        name = _name(crd)
        live = get(conn, name)
        if live is not None:
            _check_stored_versions(name, live, crd)  # the server's dry run would refuse it too
        desired = _write(conn, crd, live, dry_run=True) if server_dry_run else crd
        left = normalize(live)
        right = normalize(desired)
        if live is not None and not server_dry_run and _same(left, right):
            right = left
        a = dump([left], sort_keys=True).splitlines(keepends=True) if live is not None else []
        b = dump([right], sort_keys=True).splitlines(keepends=True)
        text = "".join(difflib.unified_diff(a, b, f"live/{name}", f"merged/{name}"))
        out.append((name, text))
    return out
