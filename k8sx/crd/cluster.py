"""The CRDs installed in a cluster, read through the API server (the first of the ``crd`` verbs that
talk to a cluster; ``apply`` and ``diff`` build on the same connection)."""

from __future__ import annotations

import json
from typing import Any

from k8sx.errors import K8sxError
from k8sx.kube import KubeConnection


def summarize(crd: dict[str, Any]) -> dict[str, Any]:
    """One row per CRD: what ``kubectl get crd`` leaves out (versions, the storage version, state)."""
    spec = crd.get("spec") or {}
    versions = spec.get("versions") or []
    conditions = {c.get("type"): c.get("status") for c in (crd.get("status") or {}).get("conditions") or []}
    return {
        "name": (crd.get("metadata") or {}).get("name", ""),
        "group": spec.get("group", ""),
        "kind": (spec.get("names") or {}).get("kind", ""),
        "scope": spec.get("scope", ""),
        "versions": ",".join(v.get("name", "") for v in versions if v.get("served", True)),
        "storage": ",".join(v.get("name", "") for v in versions if v.get("storage")),
        "established": conditions.get("Established", "Unknown"),
    }


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
# metadata the API server sets: never part of a manifest, ignored when comparing with one
SERVER_OWNED_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


def request(conn: KubeConnection, method: str, path: str, body: Any = None,
            query: list[tuple[str, str]] | None = None, what: str = "") -> tuple[int, Any]:
    """One raw JSON request to the API server: (status, decoded body). Transport failures and
    authentication errors raise K8sxError; other statuses are the caller's to judge.

    Raw JSON rather than the client's models: CRDs are handled as plain dicts, and unknown fields
    (newer servers) pass through untouched.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = conn.api_client()
    what = what or f"{method} {path}"
    try:
        m, url, headers, data, _ = api.param_serialize(
            method, path, query_params=query or [], body=body,
            header_params={"Accept": "application/json", **({"Content-Type": "application/json"} if body else {})},
            auth_settings=["BearerToken"])
        response = api.call_api(m, url, header_params=headers, body=data, _request_timeout=conn.timeout())
        response.read()
        status, raw = response.status, response.data
    except ApiException as e:
        status, raw = e.status, (e.body or b"")
    except (HTTPError, OSError) as e:
        raise K8sxError(f"cannot reach the API server at {api.configuration.host}: {e}") from None
    finally:
        api.close()
    try:
        decoded = json.loads(raw or b"null")
    except ValueError:
        decoded = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if status in (401, 403):
        message = decoded.get("message") if isinstance(decoded, dict) else ""
        raise K8sxError(f"{what}: the API server answered {status}: {message or 'not allowed'}")
    return status, decoded


def list_crds(conn: KubeConnection) -> list[dict[str, Any]]:
    """All CustomResourceDefinitions of the cluster, as plain dicts, sorted by name."""
    status, data = request(conn, "GET", CRDS, what="listing CRDs")
    if not 200 <= status < 300:
        raise K8sxError(f"listing CRDs: the API server answered {status} {_reason(data)}")
    items = (data or {}).get("items") or [] if isinstance(data, dict) else []
    return sorted(items, key=lambda c: (c.get("metadata") or {}).get("name", ""))


def _reason(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or "")
    return str(data or "")[:200]
