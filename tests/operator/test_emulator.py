"""The API emulator's additions over stock kmock, each as a client sees it (tests/kubeapi.py re-exports it):
CRD discovery, server-set metadata and 201, resourceVersions with optimistic concurrency, namespaces,
label selectors and watch timeouts."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from kubeapi import ApiEmulator

CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "widgets.k8sxtk.example.com"},
       "spec": {"group": "k8sxtk.example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                              "schema": {"openAPIV3Schema": {"type": "object",
                                                             "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture(scope="module")
def api():
    with ApiEmulator() as emulator:
        yield emulator


def status_of(api, method: str, path: str, body=None, content_type: str = "application/json") -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api.url + path, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_crd_is_discoverable_once_created(api):
    assert status_of(api, "GET", "/apis/k8sxtk.example.com/v1") == 404
    api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    resources = {r["name"]: r for r in api.request("GET", "/apis/k8sxtk.example.com/v1")["resources"]}
    assert set(resources) == {"widgets", "widgets/status"}
    assert resources["widgets"]["kind"] == "Widget" and resources["widgets"]["namespaced"] is True
    assert {"list", "watch", "patch", "create"} <= set(resources["widgets"]["verbs"])
    assert resources["widgets"]["shortNames"] == ["wd"]
    assert api.request("GET", "/apis/k8sxtk.example.com/v1/namespaces/default/widgets")["items"] == []


def test_create_answers_201_and_sets_server_fields(api):
    path = "/api/v1/namespaces/default/configmaps"
    assert status_of(api, "POST", path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}) == 201
    made = api.create(path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}})
    meta = made["metadata"]
    assert meta["name"].startswith("gen-") and len(meta["name"]) == 9
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    first = int(meta["resourceVersion"])
    patched = api.patch(f"{path}/{meta['name']}", {"data": {"k": "v"}})
    assert int(patched["metadata"]["resourceVersion"]) > first and patched["metadata"]["uid"] == meta["uid"]


def test_optimistic_concurrency(api):
    path = "/api/v1/namespaces/default/configmaps"
    obj = api.create(path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "occ"}})
    stale = obj["metadata"]["resourceVersion"]
    api.patch(f"{path}/occ", {"data": {"x": "1"}})
    assert status_of(api, "PUT", f"{path}/occ", {**obj, "data": {"x": "2"}}) == 409  # stale resourceVersion
    test_op = [{"op": "test", "path": "/metadata/resourceVersion", "value": stale},
               {"op": "add", "path": "/data/y", "value": "3"}]
    assert status_of(api, "PATCH", f"{path}/occ", test_op, "application/json-patch+json") == 422
    fresh = api.get(f"{path}/occ")
    assert status_of(api, "PUT", f"{path}/occ", {**fresh, "data": {"x": "2"}}) == 200
    assert api.get(f"{path}/occ")["data"] == {"x": "2"}


def test_namespaces_are_a_cluster_resource(api):
    assert [n["metadata"]["name"] for n in api.request("GET", "/api/v1/namespaces")["items"]] == ["default"]
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "k8sxtk-ns"}})
    assert api.get("/api/v1/namespaces/k8sxtk-ns")["metadata"]["name"] == "k8sxtk-ns"
    api.create("/api/v1/namespaces/k8sxtk-ns/configmaps", {"metadata": {"name": "in-ns"}})
    assert api.get("/api/v1/namespaces/k8sxtk-ns/configmaps/in-ns")["metadata"]["namespace"] == "k8sxtk-ns"


def test_label_selectors(api):
    path = "/api/v1/namespaces/default/secrets"
    for name, labels in (("s1", {"app": "a", "tier": "web"}), ("s2", {"app": "b"}), ("s3", {})):
        api.create(path, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in api.request("GET", f"{path}?labelSelector={selector}")["items"])

    assert names("app=a") == ["s1"]
    assert names("app==b") == ["s2"]
    assert names("app!=a") == ["s2", "s3"]
    assert names("app") == ["s1", "s2"]
    assert names("!app") == ["s3"]
    assert names("app=a,tier=web") == ["s1"]
    assert status_of(api, "GET", f"{path}?labelSelector=app%20in%20(a)") == 400


def test_a_watch_ends_after_timeout_seconds_and_filters_by_label(api):
    path = "/api/v1/namespaces/default/services"
    api.create(path, {"metadata": {"name": "w1", "labels": {"pick": "yes"}}})
    api.create(path, {"metadata": {"name": "w2"}})
    start = time.monotonic()
    with urllib.request.urlopen(f"{api.url}{path}?watch=true&timeoutSeconds=1&labelSelector=pick%3Dyes",
                                timeout=10) as r:
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    assert 0.9 < time.monotonic() - start < 5
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w1")]


def test_a_watch_from_a_resource_version_skips_what_the_list_returned(api):
    path = "/api/v1/namespaces/default/persistentvolumeclaims"
    api.create(path, {"metadata": {"name": "old"}})
    listed = api.request("GET", path)
    api.create(path, {"metadata": {"name": "new"}})
    rv = listed["metadata"]["resourceVersion"]
    with urllib.request.urlopen(f"{api.url}{path}?watch=true&timeoutSeconds=1&resourceVersion={rv}", timeout=10) as r:
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "new")]
    with urllib.request.urlopen(f"{api.url}{path}?watch=true&timeoutSeconds=1", timeout=10) as r:
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    assert sorted(e["object"]["metadata"]["name"] for e in events) == ["new", "old"]
