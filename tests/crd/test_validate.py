# ruff: noqa: E501  (the table of cases reads best one case per line)
"""The offline validator: a table of CRDs that the API server rejects, each with the rule it breaks
and the line it is reported at; valid CRDs pass; the CLI's exit codes and output formats.

Every case starts from one valid CRD (checked first, so a case cannot pass by accident) and changes
one thing. Several are CRDs that a generic schema check of the object (kubernetes-validate) accepts
-- the name not <plural>.<group>, a schema without types, uniqueItems -- which is why the rules are
re-implemented here.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from crdtools import k8sx

from k8sx.crd.documents import dump, load_text
from k8sx.crd.validate import RULES, check_value, validate_crd, validate_documents

BASE = yaml.safe_load("""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  names: {kind: CronTab, listKind: CronTabList, plural: crontabs, singular: crontab, shortNames: [ct]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    subresources: {status: {}, scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}}
    selectableFields: [{jsonPath: .spec.cronSpec}]
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations: [{rule: "self.replicas >= 0", message: "no negative replicas"}]
            properties:
              cronSpec: {type: string, pattern: '^\\S+$'}
              replicas: {type: integer, default: 1, minimum: 0}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items: {type: object, required: [name], properties: {name: {type: string}, port: {type: integer}}}
              tags: {type: array, x-kubernetes-list-type: set, items: {type: string}}
          status: {type: object, properties: {replicas: {type: integer}}}
""")

V = ("spec", "versions", 0)
S = (*V, "schema", "openAPIV3Schema")
SPEC = (*S, "properties", "spec")
P = (*SPEC, "properties")


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()

# (case, rule expected, path it is reported at, [(path, new value), ...])
CASES = [
    ("name not plural.group", "names.crd-name", ("metadata", "name"), [(("metadata", "name"), "crontab.stable.example.com")]),
    ("group without a dot", "names.group", ("spec", "group"),
     [(("spec", "group"), "stable"), (("metadata", "name"), "crontabs.stable")]),
    ("group not DNS", "names.group", ("spec", "group"),
     [(("spec", "group"), "Stable.example.com"), (("metadata", "name"), "crontabs.Stable.example.com")]),
    ("protected group", "names.protected-group", ("metadata",),
     [(("spec", "group"), "stable.k8s.io"), (("metadata", "name"), "crontabs.stable.k8s.io")]),
    ("plural upper case", "names.dns1035", ("spec", "names", "plural"),
     [(("spec", "names", "plural"), "CronTabs"), (("metadata", "name"), "CronTabs.stable.example.com")]),
    ("short name with a dot", "names.dns1035", ("spec", "names", "shortNames", 0), [(("spec", "names", "shortNames"), ["c.t"])]),
    ("kind not DNS", "names.kind", ("spec", "names", "kind"), [(("spec", "names", "kind"), "Cron_Tab")]),
    ("kind == listKind", "names.kind-listkind", ("spec", "names", "listKind"), [(("spec", "names", "listKind"), "CronTab")]),
    ("no singular", "names.required", ("spec", "names"), [(("spec", "names", "singular"), _DELETE)]),
    ("no scope", "scope", ("spec", "scope"), [(("spec", "scope"), _DELETE)]),
    ("no storage version", "versions.storage", ("spec", "versions"), [((*V, "storage"), False)]),
    ("two storage versions", "versions.storage", ("spec", "versions"),
     [(("spec", "versions", 1), "v2")]),
    ("no versions", "versions.required", ("spec", "versions"), [(("spec", "versions"), [])]),
    ("version listed twice", "versions.unique", ("spec", "versions", 1, "name"), [(("spec", "versions", 1), None)]),
    ("column without name", "columns.name", (*V, "additionalPrinterColumns", 0),
     [((*V, "additionalPrinterColumns", 0, "name"), _DELETE)]),
    ("stored version dropped", "versions.stored", ("status", "storedVersions", 1),
     [(("status",), {"storedVersions": ["v1", "v1beta1"]})]),
    ("version name", "versions.name", (*V, "name"), [((*V, "name"), "V1")]),
    ("warning without deprecated", "versions.deprecation", (*V, "deprecationWarning"), [((*V, "deprecationWarning"), "x")]),
    ("preserveUnknownFields true", "spec.preserve-unknown-fields", ("spec", "preserveUnknownFields"),
     [(("spec", "preserveUnknownFields"), True)]),
    ("no schema", "schema.required", V, [((*V, "schema"), _DELETE)]),
    ("$ref", "schema.forbidden-keyword", (*P, "cronSpec", "$ref"), [((*P, "cronSpec", "$ref"), "#/definitions/x")]),
    ("definitions", "schema.forbidden-keyword", (*S, "definitions"), [((*S, "definitions"), {"x": {"type": "string"}})]),
    ("patternProperties", "schema.forbidden-keyword", (*SPEC, "patternProperties"),
     [((*SPEC, "patternProperties"), {"^a": {"type": "string"}})]),
    ("uniqueItems true", "schema.unique-items", (*P, "tags", "uniqueItems"), [((*P, "tags", "uniqueItems"), True)]),
    ("$defs (JSON Schema 2020-12)", "schema.unknown-keyword", (*S, "$defs"), [((*S, "$defs"), {})]),
    ("unknown type", "schema.type", (*P, "cronSpec", "type"), [((*P, "cronSpec", "type"), "str")]),
    ("property without type", "structural.type", (*P, "cronSpec"), [((*P, "cronSpec", "type"), _DELETE)]),
    ("root without type", "structural.type", S, [((*S, "type"), _DELETE)]),
    ("root not object", "structural.root-type", (*S, "type"), [((*S, "type"), "array"), ((*S, "items"), {"type": "string"})]),
    ("array without items", "structural.items", (*P, "tags"), [((*P, "tags", "items"), _DELETE)]),
    ("item without type", "structural.type", (*P, "tags", "items"), [((*P, "tags", "items"), {"maxLength": 3})]),
    ("type inside anyOf", "structural.junctor", (*SPEC, "anyOf", 0, "type"),
     [((*SPEC, "anyOf"), [{"type": "object", "required": ["cronSpec"]}])]),
    ("default inside oneOf", "structural.junctor", (*SPEC, "oneOf", 0, "default"),
     [((*SPEC, "oneOf"), [{"default": {}}])]),
    ("field only in a junctor", "structural.completeness", (*SPEC, "anyOf", 0, "properties", "other"),
     [((*SPEC, "anyOf"), [{"properties": {"other": {"minLength": 1}}}])]),
    ("metadata restricted beyond name", "structural.metadata", (*S, "properties", "metadata"),
     [((*S, "properties", "metadata"), {"type": "object", "properties": {"labels": {"type": "object"}}})]),
    ("additionalProperties at the root", "structural.root-additional-properties", (*S, "additionalProperties"),
     [((*S, "additionalProperties"), {"type": "string"}), ((*S, "properties"), _DELETE),
      ((*V, "subresources"), _DELETE), ((*V, "selectableFields"), _DELETE)]),
    ("properties and additionalProperties", "schema.properties-and-additional-properties",
     (*SPEC, "additionalProperties"), [((*SPEC, "additionalProperties"), {"type": "string"})]),
    ("preserve-unknown-fields false", "schema.preserve-unknown-fields",
     (*SPEC, "x-kubernetes-preserve-unknown-fields"), [((*SPEC, "x-kubernetes-preserve-unknown-fields"), False)]),
    ("int-or-string with preserve", "structural.int-or-string", (*P, "port", "x-kubernetes-preserve-unknown-fields"),
     [((*P, "port"), {"x-kubernetes-int-or-string": True, "x-kubernetes-preserve-unknown-fields": True})]),
    ("embedded resource not an object", "structural.embedded-resource", (*P, "tpl", "type"),
     [((*P, "tpl"), {"type": "string", "x-kubernetes-embedded-resource": True})]),
    ("embedded resource without fields", "structural.embedded-resource", (*P, "tpl"),
     [((*P, "tpl"), {"type": "object", "x-kubernetes-embedded-resource": True})]),
    ("pattern not RE2", "schema.pattern", (*P, "cronSpec", "pattern"), [((*P, "cronSpec", "pattern"), "^(?!x)")]),
    ("default of the wrong type", "schema.default", (*P, "replicas", "default"), [((*P, "replicas", "default"), "one")]),
    ("default below the minimum", "schema.default", (*P, "replicas", "default"), [((*P, "replicas", "default"), -1)]),
    ("map type on a string", "schema.map-type", (*P, "cronSpec", "x-kubernetes-map-type"),
     [((*P, "cronSpec", "x-kubernetes-map-type"), "atomic")]),
    ("list type on an object", "list-type", (*SPEC, "x-kubernetes-list-type"), [((*SPEC, "x-kubernetes-list-type"), "set")]),
    ("list type unknown", "list-type", (*P, "tags", "x-kubernetes-list-type"), [((*P, "tags", "x-kubernetes-list-type"), "bag")]),
    ("map-list without keys", "list-type.map", (*P, "ports", "x-kubernetes-list-type"),
     [((*P, "ports", "x-kubernetes-list-map-keys"), _DELETE)]),
    ("map-list key not a property", "list-type.map", (*P, "ports", "x-kubernetes-list-map-keys"),
     [((*P, "ports", "x-kubernetes-list-map-keys"), ["id"])]),
    ("map-list key optional, no default", "list-type.map", (*P, "ports", "items", "properties", "name"),
     [((*P, "ports", "items", "required"), _DELETE)]),
    ("map-list key not scalar", "list-type.map", (*P, "ports", "items", "properties", "name", "type"),
     [((*P, "ports", "items", "properties", "name"), {"type": "object"})]),
    ("map-list items not objects", "list-type.map", (*P, "ports", "items", "type"),
     [((*P, "ports", "items"), {"type": "string"})]),
    ("keys without map", "list-type.map", (*P, "tags", "x-kubernetes-list-type"),
     [((*P, "tags", "x-kubernetes-list-map-keys"), ["x"])]),
    ("set of nullable items", "list-type.set", (*P, "tags", "items", "nullable"),
     [((*P, "tags", "items", "nullable"), True)]),
    ("set of granular objects", "list-type.set", (*P, "tags", "items"),
     [((*P, "tags", "items"), {"type": "object", "properties": {"a": {"type": "string"}}})]),
    ("CEL syntax", "cel.syntax", (*SPEC, "x-kubernetes-validations", 0, "rule"),
     [((*SPEC, "x-kubernetes-validations", 0, "rule"), "self.replicas >= ")]),
    ("CEL messageExpression syntax", "cel.syntax", (*SPEC, "x-kubernetes-validations", 0, "messageExpression"),
     [((*SPEC, "x-kubernetes-validations", 0, "messageExpression"), "'n=' + ")]),
    ("CEL message with a line break", "cel.rule", (*SPEC, "x-kubernetes-validations", 0, "message"),
     [((*SPEC, "x-kubernetes-validations", 0, "message"), "two\nlines")]),
    ("CEL reason unknown", "cel.rule", (*SPEC, "x-kubernetes-validations", 0, "reason"),
     [((*SPEC, "x-kubernetes-validations", 0, "reason"), "FieldValueWrong")]),
    ("CEL empty rule", "cel.rule", (*SPEC, "x-kubernetes-validations", 0), [((*SPEC, "x-kubernetes-validations", 0, "rule"), " ")]),
    ("CEL fieldPath not in schema", "cel.rule", (*SPEC, "x-kubernetes-validations", 0, "fieldPath"),
     [((*SPEC, "x-kubernetes-validations", 0, "fieldPath"), ".nope")]),
    ("status root keywords", "subresources.status-root", S, [((*S, "anyOf"), [{"required": ["spec"]}])]),
    ("scale path outside spec", "subresources.scale", (*V, "subresources", "scale", "specReplicasPath"),
     [((*V, "subresources", "scale", "specReplicasPath"), ".status.replicas")]),
    ("column type", "columns.type", (*V, "additionalPrinterColumns", 0, "type"),
     [((*V, "additionalPrinterColumns", 0, "type"), "float")]),
    ("column format", "columns.format", (*V, "additionalPrinterColumns", 0, "format"),
     [((*V, "additionalPrinterColumns", 0, "format"), "uuid")]),
    ("column JSONPath (v1beta1 spelling)", "columns.json-path", (*V, "additionalPrinterColumns", 0),
     [((*V, "additionalPrinterColumns", 0), {"name": "Spec", "type": "string", "JSONPath": ".spec.cronSpec"})]),
    ("column path without dot", "columns.json-path", (*V, "additionalPrinterColumns", 0, "jsonPath"),
     [((*V, "additionalPrinterColumns", 0, "jsonPath"), "spec.cronSpec")]),
    ("selectable field in metadata", "selectable-fields", (*V, "selectableFields", 0, "jsonPath"),
     [((*V, "selectableFields", 0, "jsonPath"), ".metadata.name")]),
    ("selectable field is an array", "selectable-fields", (*V, "selectableFields", 0, "jsonPath"),
     [((*V, "selectableFields", 0, "jsonPath"), ".spec.tags")]),
    ("webhook without clientConfig", "conversion", ("spec", "conversion", "webhook"),
     [(("spec", "conversion"), {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"]}})]),
    ("webhook url and service", "conversion", ("spec", "conversion", "webhook", "clientConfig"),
     [(("spec", "conversion"), {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": {
         "url": "https://x", "service": {"name": "a", "namespace": "b"}}}})]),
    ("unknown v1 field", "unknown-field", ("spec", "validation"), [(("spec", "validation"), {})]),
    ("names is a string", "shape", ("spec", "names"), [(("spec", "names"), "crontabs")]),
    ("required is a string", "shape", (*P, "ports", "items", "required"), [((*P, "ports", "items", "required"), "name")]),
    ("not a CRD", "document", ("kind",), [(("kind",), "ConfigMap")]),
    ("v1beta1 document", "api-version", ("apiVersion",), [(("apiVersion",), "apiextensions.k8s.io/v1beta1")]),
]


def _case(changes):
    doc = copy.deepcopy(BASE)
    for path, value in changes:
        if path == ("spec", "versions", 1):  # a second version: v2 (both storage), or v1 again (unique)
            doc["spec"]["versions"].append({**copy.deepcopy(doc["spec"]["versions"][0]),
                                            "name": "v1" if value is None else value})
            continue
        _set(doc, path, value)
    return doc


def test_base_is_valid():
    assert validate_crd(BASE) == []


def test_every_rule_has_a_case():
    covered = {rule for _, rule, _, _ in CASES}
    assert set(RULES) - covered - {"size.last-applied"} == set()  # a warning: test_big_crd_warns_but_passes


@pytest.mark.parametrize("name, rule, path, changes", CASES, ids=[c[0] for c in CASES])
def test_invalid_crd_is_rejected_with_its_rule_and_line(name, rule, path, changes):
    doc = _case(changes)
    text = dump([doc])
    problems = validate_documents(load_text(text, "k8sxtd.yaml"))
    errors = [p for p in problems if p.severity == "error"]
    assert errors, f"{name}: accepted"
    hits = [p for p in errors if p.rule == rule and p.path == path]
    assert hits, f"{name}: expected [{rule}] at {path}, got " + "; ".join(str(p) for p in errors)
    # file:line points at the offending node: the line holds its key (or the parent's, for a whole node)
    line = int(hits[0].where.split(":")[1])
    lines = text.splitlines()
    located = load_text(text, "k8sxtd.yaml")[0]
    present = path
    while present not in located.lines:  # a missing field is reported at its parent
        present = present[:-1]
    assert line == located.lines[present]
    key = next((str(p) for p in reversed(present) if isinstance(p, str)), None)
    assert key is None or key in lines[line - 1] or lines[line - 1].lstrip().startswith("-"), (
        f"{hits[0].where} -> {lines[line - 1]!r}")


def test_cli_reports_file_line_rule_and_exit_1(tmp_path):
    f = tmp_path / "k8sxtd-bad.yaml"
    bad = _case([(("metadata", "name"), "wrong.stable.example.com"), ((*P, "cronSpec", "type"), _DELETE)])
    f.write_text("# two documents, the first valid\n" + dump([BASE, bad]))
    r = k8sx("crd", "validate", str(f))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    text = f.read_text().splitlines()
    name_line = next(i for i, t in enumerate(text, 1) if "wrong.stable.example.com" in t)
    assert f"{f}:{name_line}: [names.crd-name] metadata.name: 'wrong.stable.example.com' must be " \
           "<plural>.<group>: crontabs.stable.example.com" in lines
    assert any("[structural.type] spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.cronSpec" in x
               for x in lines)
    assert "2 document(s), 3 error(s)" in r.stderr  # the third: the selectable field is now untyped
    js = json.loads(k8sx("crd", "validate", str(f), "-o", "json").stdout)
    assert {p["rule"] for p in js} == {"names.crd-name", "structural.type", "selectable-fields"}


def test_cli_valid_usage_and_list(tmp_path):
    f = tmp_path / "k8sxtd-ok.yaml"
    f.write_text(dump([BASE]))
    r = k8sx("crd", "validate", str(f))
    assert (r.returncode, r.stdout) == (0, "")
    assert k8sx("crd", "validate", "-", stdin=dump([BASE])).returncode == 0
    r = k8sx("crd", "validate", str(tmp_path / "k8sxtd-missing.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr
    assert k8sx("crd", "validate").returncode == 2
    f.write_text("a: [1,\n")
    r = k8sx("crd", "validate", str(f))
    assert r.returncode == 1 and f"{f}:2: not valid YAML" in r.stderr and "Traceback" not in r.stderr
    r = k8sx("crd", "validate", "--list-rules", "-o", "json")
    assert {x["rule"] for x in json.loads(r.stdout)} == set(RULES)


def test_cel_optional_syntax_and_k8s_functions_parse():
    doc = copy.deepcopy(BASE)
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "oldSelf.?replicas.orValue(0) <= self.replicas", "optionalOldSelf": True},
        {"rule": "self.ports.all(p, p.name.matches('^[a-z]+$')) && isURL('https://x')"},
        {"rule": "quantity('1Gi').isLessThan(quantity('2Gi'))", "messageExpression": "'got ' + string(self.replicas)"},
    ]
    assert validate_crd(doc) == []


def test_big_crd_warns_but_passes():
    doc = copy.deepcopy(BASE)
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "x" * 270000
    problems = validate_crd(doc)
    assert [(p.rule, p.severity) for p in problems] == [("size.last-applied", "warning")]


def test_check_value():
    s = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer", "maximum": 3}}}
    assert check_value(s, {"a": 3}) == []
    assert check_value(s, {"a": 4}) == ["value.a: 4 is above the maximum 3"]
    assert check_value(s, {"b": 1}) == ["value: missing required field a", "value: unknown field b (it would be pruned)"]
    assert check_value({"type": "string", "nullable": True}, None) == []


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def test_any_field_of_any_type_is_a_problem_not_a_crash():
    """Every node of a valid CRD replaced by values of every JSON type: validate and convert report,
    never raise."""
    from k8sx.crd.convert import convert_documents
    from k8sx.crd.documents import Document

    for path in list(_paths(BASE))[1:]:
        for value in (None, "x", 1, 2.5, True, [], [1, "a"], {}, {"a": 1}):
            doc = copy.deepcopy(BASE)
            _set(doc, path, value)
            validate_crd(doc)
            doc["apiVersion"] = "apiextensions.k8s.io/v1beta1"
            convert_documents([Document(doc, "k8sxtd.yaml")])


# The rules the issue names, each broken by a case of the table that kubernetes-validate --strict passes.
MISSED_BY_SCHEMA_CHECK = {"names.crd-name", "names.group", "names.dns1035", "names.kind-listkind", "versions.storage",
                          "structural.type", "schema.forbidden-keyword", "schema.unique-items", "columns.type",
                          "columns.format", "list-type.map", "cel.syntax", "schema.pattern", "structural.junctor"}


def test_kubernetes_validate_accepts_what_the_server_rejects():
    """The point of this validator: kubernetes-validate (the OpenAPI schema of the CRD object, strict)
    passes these invalid CRDs; the table above shows each rejected here with its rule."""
    import kubernetes_validate

    accepted = set()
    for _name, rule, _path, changes in CASES:
        try:
            kubernetes_validate.validate(_case(changes), "1.32.0", strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.utils.SchemaNotFoundError):
            continue
        accepted.add(rule)
    assert accepted >= MISSED_BY_SCHEMA_CHECK


def test_directory_stands_for_its_manifests(tmp_path):
    (tmp_path / "a.yaml").write_text(dump([BASE]))
    bad = copy.deepcopy(BASE)
    bad["spec"]["scope"] = "Global"
    (tmp_path / "b.json").write_text(json.dumps(bad))
    (tmp_path / "notes.txt").write_text("not a manifest")
    r = k8sx("crd", "validate", str(tmp_path))
    assert r.returncode == 1
    assert r.stdout.startswith(f"{tmp_path / 'b.json'}:1: [scope] spec.scope:")
    empty = tmp_path / "k8sxtd-empty"
    empty.mkdir()
    assert k8sx("crd", "validate", str(empty)).returncode == 2
