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


def list_crds(conn: KubeConnection) -> list[dict[str, Any]]:
    """All CustomResourceDefinitions of the cluster, as plain dicts, sorted by name."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = conn.api_client()
    try:
        # Raw JSON rather than the client's models: rows are built from plain dicts, and unknown
        # fields (newer servers) pass through untouched.
        method, url, headers, body, _ = api.param_serialize(
            "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = api.call_api(method, url, header_params=headers, body=body,
                                _request_timeout=conn.timeout())
        response.read()
        if not 200 <= response.status < 300:
            raise K8sxError(f"listing CRDs: the API server answered {response.status} {response.reason}")
        data = json.loads(response.data or b"{}")
    except ApiException as e:
        raise K8sxError(f"listing CRDs: the API server answered {e.status} {e.reason}") from None
    except (HTTPError, OSError) as e:
        raise K8sxError(f"cannot reach the API server at {api.configuration.host}: {e}") from None
    finally:
        api.close()
    items = (data or {}).get("items") or []
    return sorted(items, key=lambda c: (c.get("metadata") or {}).get("name", ""))
