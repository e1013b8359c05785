"""``crd generate`` from each source -- flags, a pydantic model, a dataclass, a sample -- against golden
files, and round trips: whatever generate prints, validate accepts (and the offline validator is
the same code the API server's rules were taken from, so this is not validate agreeing with itself
on a trivial input: the table in test_validate.py proves each rule rejects)."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from crdtools import DATA, golden, k8sx

CRONTAB_FLAGS = [
    "crd", "generate", "--group", "stable.example.com", "--kind", "CronTab", "--short-name", "ct",
    "--category", "all",
    "--field", r'spec.cronSpec:string:required,pattern="^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$"',
    "--field", "spec.image:string:required,minLength=1",
    "--field", "spec.replicas:integer:minimum=1,maximum=10,default=1",
    "--field", "status.replicas:integer",
    "--field", "status.labelSelector:string",
    "--rule", 'spec:{"rule": "self.replicas <= 5 || self.image.startsWith(\'registry.example.com/\')", '
              '"message": "more than 5 replicas only from the internal registry", "reason": "FieldValueForbidden"}',
    "--column", "Spec:string:.spec.cronSpec",
    "--column", "Replicas:integer:.spec.replicas",
    "--column", "Age:date:.metadata.creationTimestamp",
    "--scale", "--scale-selector-path", ".status.labelSelector",
    "--selectable-field", ".spec.image",
]

SOURCES = {
    "crontab-flags": CRONTAB_FLAGS,
    "crontab-sample": ["crd", "generate", "--from-sample", os.path.join(DATA, "crontab.yaml"), "--short-name", "ct"],
    "appservice-sample": ["crd", "generate", "--from-sample", os.path.join(DATA, "appservice.yaml")],
    "appservice-model": ["crd", "generate", "--from-model", "appservice_model:AppService", "--group",
                         "app.example.com", "--version", "v1alpha1"],
    "appservice-dataclass": ["crd", "generate", "--from-model", "appservice_model:AppServiceSpecDC", "--group",
                             "app.example.com", "--kind", "AppService", "--version", "v1alpha1", "-o", "json"],
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden_and_round_trip(name, tmp_path):
    r = k8sx(*SOURCES[name], cwd=DATA)
    assert r.returncode == 0, r.stderr
    ext = "json" if "-o" in SOURCES[name] else "yaml"
    golden(f"{name}.{ext}", r.stdout)
    again = k8sx(*SOURCES[name], cwd=DATA)
    assert again.stdout == r.stdout, "generate is not deterministic"
    out = tmp_path / f"k8sxtd-{name}.{ext}"
    out.write_text(r.stdout)
    v = k8sx("crd", "validate", str(out))
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stdout == ""


def test_flags_carry_every_crd_level_knob():
    args = ["crd", "generate", "-g", "stable.example.com", "-k", "CronTab", "--field", "spec.cronSpec:string",
            "--version", "v1", "--version", "v1beta1", "--version", "v2", "--storage-version", "v1",
            "--unserved-version", "v2", "--deprecated-version", "v1beta1=use v1",
            "--webhook-service", "crontab-system/webhook", "--webhook-port", "9443",
            "--conversion-review-version", "v1", "--label", "app=crontab", "--annotation", "team=batch",
            "--scope", "Cluster", "--plural", "crontabz", "--singular", "ctab", "--list-kind", "CronTabs",
            "--no-status", "-o", "json"]
    r = k8sx(*args)
    assert r.returncode == 0, r.stderr
    crd = json.loads(r.stdout)
    assert crd["metadata"] == {"annotations": {"team": "batch"}, "labels": {"app": "crontab"},
                               "name": "crontabz.stable.example.com"}
    spec = crd["spec"]
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {"kind": "CronTab", "listKind": "CronTabs", "plural": "crontabz", "singular": "ctab"}
    assert [(v["name"], v["served"], v["storage"], v.get("deprecationWarning")) for v in spec["versions"]] == [
        ("v1", True, True, None), ("v1beta1", True, False, "use v1"), ("v2", False, False, None)]
    assert all("subresources" not in v for v in spec["versions"])
    assert "status" not in spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert spec["conversion"] == {"strategy": "Webhook", "webhook": {
        "clientConfig": {"service": {"name": "webhook", "namespace": "crontab-system", "path": "/convert",
                                     "port": 9443}},
        "conversionReviewVersions": ["v1"]}}


def test_field_constraints_map_to_markers():
    """Each --field constraint lands as the keyword controller-gen's marker emits."""
    fields = [
        "spec.a:integer:gt=0,lt=10,multipleOf=2",
        "spec.b:string:maxLength=5,format=hostname,enum=x|y",
        "spec.c:[]string:listType=set,minItems=1,maxItems=3",
        "spec.d:[]object:listMapKey=name",
        "spec.d[].name:string:required",
        "spec.e:map[string]:mapType=atomic,minProperties=1,maxProperties=4",
        "spec.f:int-or-string",
        "spec.g:object:preserveUnknownFields",
        "spec.h:embedded",
        "spec.i:string:nullable,description=\"an i, nullable\"",
        "spec.j:any",
        "spec.k:integer:enum=1|2,default=2",
        "spec.l:quantity",
        "spec.m:object:structType=atomic,rule=self.size() > 0",
        "spec.n:int32:schemaless",
    ]
    r = k8sx("crd", "generate", "-g", "x.example.com", "-k", "Thing", "-o", "json",
             *[a for f in fields for a in ("--field", f)])
    assert r.returncode == 0, r.stderr
    props = json.loads(r.stdout)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]
    assert props["a"] == {"exclusiveMaximum": True, "exclusiveMinimum": True, "maximum": 10, "minimum": 0,
                          "multipleOf": 2, "type": "integer"}
    assert props["b"] == {"enum": ["x", "y"], "format": "hostname", "maxLength": 5, "type": "string"}
    assert props["c"] == {"items": {"type": "string"}, "maxItems": 3, "minItems": 1, "type": "array",
                          "x-kubernetes-list-type": "set"}
    assert props["d"]["x-kubernetes-list-type"] == "map"
    assert props["d"]["x-kubernetes-list-map-keys"] == ["name"]
    assert props["d"]["items"]["required"] == ["name"]
    assert props["e"] == {"additionalProperties": {"type": "string"}, "maxProperties": 4, "minProperties": 1,
                          "type": "object", "x-kubernetes-map-type": "atomic"}
    assert props["f"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    assert props["g"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert props["h"] == {"type": "object", "x-kubernetes-embedded-resource": True,
                          "x-kubernetes-preserve-unknown-fields": True}
    assert props["i"] == {"description": "an i, nullable", "nullable": True, "type": "string"}
    assert props["j"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert props["k"] == {"default": 2, "enum": [1, 2], "type": "integer"}
    assert props["l"]["x-kubernetes-int-or-string"] is True and props["l"]["pattern"].startswith("^")
    assert props["m"] == {"type": "object", "x-kubernetes-map-type": "atomic",
                          "x-kubernetes-validations": [{"rule": "self.size() > 0"}]}
    assert props["n"] == {"x-kubernetes-preserve-unknown-fields": True}


def test_help_constraints_lists_the_markers():
    r = k8sx("crd", "generate", "--help-constraints")
    assert r.returncode == 0
    for marker in ("+kubebuilder:validation:Minimum", "+listType", "+kubebuilder:validation:XValidation:rule=",
                   "+kubebuilder:validation:EmbeddedResource", "+kubebuilder:default", "+nullable"):
        assert marker in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--kind", "X", "--field", "spec.a:string"], "--group is required"),
    (["-g", "a.b", "-k", "X", "--field", "spec.a:strin"], "unknown type 'strin'"),
    (["-g", "a.b", "-k", "X", "--field", "spec.a"], "expected PATH:TYPE"),
    (["-g", "a.b", "-k", "X", "--field", "metadata.name:string"], "metadata is defined by Kubernetes"),
    (["-g", "a.b", "-k", "X", "--field", "spec.a:string:minimun=1"], "unknown constraint 'minimun'"),
    (["-g", "a.b", "-k", "X", "--field", "spec.a:[]string:uniqueItems"], "use listType=set"),
    (["-g", "a.b", "-k", "X", "--field", "spec.a:integer:minimum=abc"], "not a number"),
    (["-g", "a.b", "-k", "X", "--column", "A:float:.spec.a"], "type must be one of"),
    (["-g", "a.b", "-k", "X", "--column", "A:string:spec.a"], "must start with '.'"),
    (["-g", "a.b", "-k", "X", "--storage-version", "v9"], "--storage-version v9 is not one of"),
    (["-g", "a.b", "-k", "X", "--rule", "spec.nope:self > 1"], "no field spec.nope"),
    (["-g", "a.b", "-k", "X", "--webhook-url", "http://x"], "must be an https:// URL"),
    (["-g", "a.b", "-k", "X", "--scope", "Global"], "'Global' is not one of"),
    (["--from-model", "k8sxtd_no_such_module:X", "-g", "a.b"], "cannot import k8sxtd_no_such_module"),
    (["--from-model", "appservice_model:Nope", "-g", "a.b"], "has no attribute 'Nope'"),
    (["--from-model", "appservice_model", "-g", "a.b"], "expected module:Class"),
    (["--from-sample", "k8sxtd-missing.yaml"], "no such file"),
    (["--from-sample", "appservice.yaml", "--from-model", "m:C"], "exclude each other"),
])
def test_usage_errors_exit_2(args, message):
    r = k8sx("crd", "generate", *args, cwd=DATA)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_invalid_result_exits_1_with_the_rule():
    r = k8sx("crd", "generate", "-g", "nodots", "-k", "Thing", "--field", "spec.a:string:pattern=(?=x)")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "<generated>:6: [names.group] spec.group: 'nodots' needs at least one dot" in r.stderr
    assert "[schema.pattern]" in r.stderr and "RE2" in r.stderr and "invalid perl operator" in r.stderr
    assert "absl" not in r.stderr  # RE2's own logging is off
    forced = k8sx("crd", "generate", "-g", "nodots", "-k", "Thing", "--no-validate")
    assert forced.returncode == 0 and yaml.safe_load(forced.stdout)["spec"]["group"] == "nodots"


def test_model_errors_are_clear(tmp_path):
    (tmp_path / "k8sxtd_models.py").write_text(
        "from __future__ import annotations\n"
        "from pydantic import BaseModel\n"
        "class Node(BaseModel):\n    child: Node | None = None\n"
        "class Mixed(BaseModel):\n    v: int | list[str]\n"
        "class Broken(BaseModel):\n    x: int\n"
        "raise_later = 1\n")
    (tmp_path / "k8sxtd_boom.py").write_text("raise RuntimeError('boom at import')\n")
    r = k8sx("crd", "generate", "--from-model", "k8sxtd_models:Node", "-g", "a.example.com", cwd=str(tmp_path))
    assert r.returncode == 1 and "refers to itself" in r.stderr, r.stderr
    r = k8sx("crd", "generate", "--from-model", "k8sxtd_models:Mixed", "-g", "a.example.com", cwd=str(tmp_path))
    assert r.returncode == 1 and "has no structural schema" in r.stderr, r.stderr
    r = k8sx("crd", "generate", "--from-model", "k8sxtd_boom:X", "-g", "a.example.com", cwd=str(tmp_path))
    assert r.returncode == 1 and "RuntimeError: boom at import" in r.stderr and "Traceback" not in r.stderr
    r = k8sx("crd", "generate", "--from-model", "k8sxtd_models.py:Broken", "-g", "a.example.com",
             cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["spec"]["names"]["kind"] == "Broken"


def test_sample_inference_notes_and_conflicts(tmp_path):
    sample = tmp_path / "k8sxtd-sample.yaml"
    sample.write_text("apiVersion: x.example.com/v1\nkind: Thing\nmetadata: {name: a}\n"
                      "spec: {a: 1, tags: [], extra: {}, port: 80, ratio: 1}\n---\n"
                      "apiVersion: x.example.com/v1\nkind: Thing\nmetadata: {name: b}\n"
                      "spec: {a: 2, port: http, ratio: 0.5, more: true}\n")
    r = k8sx("crd", "generate", "--from-sample", str(sample), "-o", "json")
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["port"]["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["ratio"] == {"type": "number"}
    assert spec["properties"]["more"] == {"type": "boolean"}
    assert spec["properties"]["tags"]["items"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert "spec.tags: empty list in the sample" in r.stderr
    sample.write_text(sample.read_text().replace("more: true", "a: [1]"))
    r = k8sx("crd", "generate", "--from-sample", str(sample))
    assert r.returncode == 1 and "spec.a: the samples disagree (integer and array)" in r.stderr


def test_every_annotated_marker_and_cel_option(tmp_path):
    (tmp_path / "k8sxtd_markers.py").write_text('''
from typing import Annotated, Any
from pydantic import BaseModel, ConfigDict, Field
from k8sx.crd.markers import (EmbeddedResource, IntOrString, ListType, MapType, Nullable, PreserveUnknownFields,
                              Schema, XValidation)

class Spec(BaseModel):
    """Spec with every marker."""
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.lo <= self.hi", "fieldPath": ".hi"}]})
    lo: int = 0
    hi: int = 10
    template: Annotated[dict[str, Any], EmbeddedResource()] = {}
    port: Annotated[str, IntOrString()] = "http"
    labels: Annotated[dict[str, str], MapType("atomic")] = {}
    raw: Annotated[dict[str, Any], PreserveUnknownFields()] = {}
    note: Annotated[str, Nullable(), Schema({"format": "password"})] = ""
    hosts: Annotated[list[str], ListType("set")] = []
    name: Annotated[str, XValidation("self == oldSelf", message="immutable", reason="FieldValueForbidden",
                                     optional_old_self=True),
                    Field(description="The name, for ever.")] = "x"
''')
    r = k8sx("crd", "generate", "--from-model", "k8sxtd_markers:Spec", "-g", "m.example.com", "-k", "Marked",
             "-o", "json", "--max-desc-len", "8",
             "--rule", '.:{"rule": "has(self.spec)", "messageExpression": "\'no spec in \' + self.metadata.name"}',
             cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    root = json.loads(r.stdout)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert root["x-kubernetes-validations"] == [
        {"messageExpression": "'no spec in ' + self.metadata.name", "rule": "has(self.spec)"}]
    spec = root["properties"]["spec"]
    assert spec["description"] == "Spec wit..."
    assert spec["x-kubernetes-validations"] == [{"fieldPath": ".hi", "rule": "self.lo <= self.hi"}]
    p = spec["properties"]
    assert p["template"]["x-kubernetes-embedded-resource"] is True
    assert p["template"]["x-kubernetes-preserve-unknown-fields"] is True and p["template"]["type"] == "object"
    assert p["port"]["x-kubernetes-int-or-string"] is True
    assert p["labels"]["x-kubernetes-map-type"] == "atomic"
    assert p["raw"]["x-kubernetes-preserve-unknown-fields"] is True
    assert p["note"] == {"default": "", "format": "password", "nullable": True, "type": "string"}
    assert p["hosts"]["x-kubernetes-list-type"] == "set"
    assert p["name"]["x-kubernetes-validations"] == [{"message": "immutable", "optionalOldSelf": True,
                                                      "reason": "FieldValueForbidden", "rule": "self == oldSelf"}]
    assert p["name"]["description"] == "The name..."


def test_union_markers_become_cel(tmp_path):
    r = k8sx("crd", "generate", "-g", "a.example.com", "-k", "Job", "-o", "json",
             "--field", "spec:object:exactlyOneOf=cron|interval,atMostOneOf=image|template",
             "--field", "spec.cron:string", "--field", "spec.interval:string", "--field", "spec.image:string",
             "--field", "spec.template:embedded", "--field", "status:object:atLeastOneOf=phase|reason",
             "--field", "status.phase:string", "--field", "status.reason:string")
    assert r.returncode == 0, r.stderr
    props = json.loads(r.stdout)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert props["spec"]["x-kubernetes-validations"] == [
        {"message": "exactly one of the fields in [cron interval] must be set",
         "rule": "[has(self.cron), has(self.interval)].filter(x, x).size() == 1"},
        {"message": "at most one of the fields in [image template] may be set",
         "rule": "[has(self.image), has(self.template)].filter(x, x).size() <= 1"}]
    assert props["status"]["x-kubernetes-validations"][0]["rule"].endswith(".size() >= 1")
    (tmp_path / "k8sxtd_union.py").write_text(
        "from typing import Annotated\nfrom pydantic import BaseModel\n"
        "from k8sx.crd.markers import ExactlyOneOf\n"
        "class Spec(BaseModel):\n    cron: str | None = None\n    interval: str | None = None\n"
        "class Job(BaseModel):\n    spec: Annotated[Spec, ExactlyOneOf('cron', 'interval')]\n")
    m = k8sx("crd", "generate", "--from-model", "k8sxtd_union:Job", "-g", "a.example.com", "-o", "json",
             cwd=str(tmp_path))
    assert m.returncode == 0, m.stderr
    spec = json.loads(m.stdout)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == props["spec"]["x-kubernetes-validations"][:1]
    bad = k8sx("crd", "generate", "-g", "a.example.com", "-k", "Job", "--field", "spec:object:exactlyOneOf=a")
    assert bad.returncode == 2 and "two or more field names" in bad.stderr


def test_scale_paths_must_survive_pruning():
    ok = k8sx("crd", "generate", "-g", "a.example.com", "-k", "Job", "--field", "spec.replicas:integer", "--scale")
    assert ok.returncode == 0 and ok.stderr == ""  # status is open by default: .status.replicas is kept
    warn = k8sx("crd", "generate", "-g", "a.example.com", "-k", "Job", "--field", "spec.size:integer", "--scale")
    assert warn.returncode == 0
    assert "warning: --scale: .spec.replicas is not an integer field of the schema" in warn.stderr


def test_a_version_with_its_own_model(tmp_path):
    """Two versions, two schemas (what a conversion webhook converts between), one storage version."""
    r = k8sx("crd", "generate", "--from-model", "appservice_model:AppService", "-g", "app.example.com",
             "--version", "v1", "--version-model", "v1alpha1=appservice_model:AppServiceSpecDC",
             "--deprecated-version", "v1alpha1=use v1", "--webhook-service", "apps/convert", "-o", "json", cwd=DATA)
    assert r.returncode == 0, r.stderr
    versions = json.loads(r.stdout)["spec"]["versions"]
    specs = {v["name"]: v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] for v in versions}
    assert sorted(specs["v1"]) == ["image", "ports", "size"] and sorted(specs["v1alpha1"]) == ["image", "size", "tags"]
    assert [(v["name"], v["storage"], v.get("deprecationWarning")) for v in versions] == [
        ("v1", True, None), ("v1alpha1", False, "use v1")]
    out = tmp_path / "k8sxtd-two.json"
    out.write_text(r.stdout)
    assert k8sx("crd", "validate", str(out)).returncode == 0
    bad = k8sx("crd", "generate", "-g", "a.example.com", "-k", "X", "--version-model", "v2", cwd=DATA)
    assert bad.returncode == 2 and "expected VERSION=MODULE:CLASS" in bad.stderr
