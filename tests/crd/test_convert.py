"""``crd convert``: the CronTab v1beta1 seed (``version: v1``, no schema) against a golden file, the
deprecation guide's table one row at a time, multi-document input, and what needs a human."""

from __future__ import annotations

import os

import yaml
from crdtools import DATA, golden, k8sx

V1BETA1_FULL = """\
apiVersion: v1
kind: Namespace
metadata: {name: k8sxtd-untouched}
---
apiVersion: apiextensions.k8s.io/v1beta1
kind: CustomResourceDefinition
metadata:
  name: widgets.shop.example.com
spec:
  group: shop.example.com
  names: {kind: Widget, plural: widgets}
  preserveUnknownFields: false
  versions:
  - {name: v1, served: true, storage: true}
  - {name: v1beta1, served: true, storage: false}
  validation:
    openAPIV3Schema:
      properties:
        spec:
          properties:
            size: {type: integer, minimum: 1}
            colors: {items: {type: string}, uniqueItems: true}
            parts: {items: {type: object, properties: {id: {type: string}}}, uniqueItems: true}
            mystery: {description: nothing to infer a type from}
  subresources: {status: {}}
  additionalPrinterColumns:
  - {name: Size, type: integer, JSONPath: .spec.size}
  conversion:
    strategy: Webhook
    webhookClientConfig: {service: {namespace: shop, name: convert, path: /convert}}
"""


def test_crontab_seed_golden_and_valid(tmp_path):
    r = k8sx("crd", "convert", os.path.join(DATA, "crontab-crd-v1beta1.yaml"))
    assert r.returncode == 0, r.stderr
    golden("crontab-converted.yaml", r.stdout)
    assert "preserveUnknownFields: true" in r.stderr and "warning" in r.stderr
    crd = yaml.safe_load(r.stdout)
    assert crd["spec"]["versions"] == [{"name": "v1", "served": True, "storage": True, "schema": {
        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]
    out = tmp_path / "k8sxtd-crontab-v1.yaml"
    out.write_text(r.stdout)
    assert k8sx("crd", "validate", str(out)).returncode == 0


def test_table_rows_and_multi_document(tmp_path):
    src = tmp_path / "k8sxtd-widgets.yaml"
    src.write_text(V1BETA1_FULL)
    r = k8sx("crd", "convert", str(src))
    ns, crd = list(yaml.safe_load_all(r.stdout))
    assert ns == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "k8sxtd-untouched"}}
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"}
    assert spec["conversion"] == {"strategy": "Webhook", "webhook": {
        "clientConfig": {"service": {"namespace": "shop", "name": "convert", "path": "/convert"}},
        "conversionReviewVersions": ["v1beta1"]}}
    assert [v["name"] for v in spec["versions"]] == ["v1", "v1beta1"]
    for v in spec["versions"]:
        assert v["additionalPrinterColumns"] == [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]
        assert v["subresources"] == {"status": {}}
        schema = v["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object" and "x-kubernetes-preserve-unknown-fields" not in schema
        props = schema["properties"]["spec"]["properties"]
        assert schema["properties"]["spec"]["type"] == "object"
        assert props["colors"] == {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}
        assert "uniqueItems" not in props["parts"]
    err = r.stderr
    lines = V1BETA1_FULL.splitlines()
    mystery_line = next(i for i, t in enumerate(lines, 1) if "mystery" in t)
    assert f"{src}:{mystery_line}: needs a human: spec.validation.openAPIV3Schema.properties.spec.properties" \
           ".mystery: no type" in err
    assert "needs a human" in err and "x-kubernetes-list-type: map" in err
    assert "scope was not set" in err and "conversionReviewVersions defaulted" in err
    # the untyped field still breaks a server rule after conversion: exit 1, the rule named
    assert r.returncode == 1
    assert "[structural.type]" in err and "mystery" in err


def test_v1_and_non_crd_documents_pass_through(tmp_path):
    src = tmp_path / "k8sxtd-v1.yaml"
    r = k8sx("crd", "generate", "-g", "a.example.com", "-k", "Thing", "--field", "spec.a:string")
    src.write_text(r.stdout)
    c = k8sx("crd", "convert", str(src), "-q")
    assert c.returncode == 0 and c.stderr == ""
    assert yaml.safe_load(c.stdout) == yaml.safe_load(r.stdout)
    assert k8sx("crd", "convert", str(tmp_path / "k8sxtd-none.yaml")).returncode == 2


def test_v1_with_preserve_unknown_fields_from_file_and_cluster(tmp_path):
    """A CRD created as v1beta1 is served as v1 with preserveUnknownFields: true, which a new v1 CRD may
    not have: convert (from a file, or --from-cluster) moves it into each schema's root."""
    from kubeapi import ApiEmulator

    crd = yaml.safe_load(k8sx("crd", "generate", "-g", "a.example.com", "-k", "Old", "--field",
                              "spec.a:string").stdout)
    crd["spec"]["preserveUnknownFields"] = True
    src = tmp_path / "k8sxtd-old.yaml"
    src.write_text(yaml.safe_dump(crd))
    assert k8sx("crd", "validate", str(src)).returncode == 1
    r = k8sx("crd", "convert", str(src))
    assert r.returncode == 0, r.stderr
    out = yaml.safe_load(r.stdout)
    assert "preserveUnknownFields" not in out["spec"]
    assert out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "spec.preserveUnknownFields: preserveUnknownFields: true cannot be set in v1" in r.stderr
    with ApiEmulator() as api:
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                   {**crd, "status": {"storedVersions": ["v1"]}})
        kc = api.kubeconfig(str(tmp_path / "k8sxtd-kubeconfig"))
        c = k8sx("crd", "convert", "--from-cluster", "--kubeconfig", kc)
        assert c.returncode == 0, c.stderr
        assert yaml.safe_load(c.stdout) == out
        assert "<cluster>/olds.a.example.com: warning: spec.preserveUnknownFields" in c.stderr
    assert k8sx("crd", "convert", str(src), "--from-cluster").returncode == 2
    assert k8sx("crd", "convert").returncode == 2
