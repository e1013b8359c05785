"""The API server's CRD rules, checked offline, each problem named by its rule and located by file:line.

Generic JSON-schema validators of the CRD object (kubernetes-validate and the like) check its
shape only; they pass a CRD whose name is not ``<plural>.<group>`` or whose schema is not
structural, which the API server then rejects. This module re-implements the server's own checks
(apiextensions-apiserver ``pkg/apis/apiextensions/validation/validation.go`` and
``pkg/apiserver/schema/validation.go``) so that ``crd validate`` -- and ``generate``/``convert``
on their own output -- fail where the server would. CEL rules are parsed with cel-python (the
authoritative type check stays with a server-side dry run); regular expressions are compiled with
RE2, the engine Go's regexp implements, since Python's ``re`` accepts patterns the server refuses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from k8sx.crd.assemble import PRINTER_FORMATS, PRINTER_TYPES
from k8sx.crd.documents import Document, Path
from k8sx.crd.markers import CEL_REASONS

# rule name -> what it checks (the API server's source in brackets)
RULES: dict[str, str] = {
    "document": "each document is a CustomResourceDefinition mapping",
    "shape": "fields have the types of the v1 API (a mapping, a list, a string, a boolean, a number)",
    "api-version": "apiextensions.k8s.io/v1 (v1beta1 is no longer served: crd convert)",
    "unknown-field": "no fields the v1 API does not have (strict field validation drops or rejects them)",
    "names.crd-name": "metadata.name is <plural>.<group> and a DNS subdomain [VAL:77-83]",
    "names.group": "spec.group is a DNS-1123 subdomain with at least one dot [VAL:358-363]",
    "names.protected-group": "*.k8s.io and *.kubernetes.io groups carry api-approved.kubernetes.io (KEP-2337)",
    "names.required": "plural, singular, kind and listKind are set [VAL:461-470]",
    "names.dns1035": "plural, singular, shortNames and categories are DNS-1035 labels [VAL:789-815]",
    "names.kind": "kind and listKind are DNS-1035 labels once lower-cased [VAL:789-815]",
    "names.kind-listkind": "kind differs from listKind [VAL:789-815]",
    "scope": "scope is Namespaced or Cluster",
    "versions.required": "at least one version",
    "versions.name": "version names are DNS-1035 labels [VAL:415]",
    "versions.unique": "version names are unique [VAL:445]",
    "versions.storage": "exactly one version has storage: true [VAL:448]",
    "versions.stored": "every version in status.storedVersions stays in spec.versions until migrated [VAL:283]",
    "versions.deprecation": "deprecationWarning only with deprecated: true, at most 256 characters",
    "spec.preserve-unknown-fields": "spec.preserveUnknownFields: true is not allowed in v1 [VAL:1894-1903]",
    "schema.required": "every version has schema.openAPIV3Schema [VAL:378,388]",
    "schema.forbidden-keyword": "no $ref, definitions, id, patternProperties, dependencies, additionalItems "
                                "[VAL:1487-1508]",
    "schema.unique-items": "uniqueItems: true is forbidden (quadratic); use x-kubernetes-list-type: set [VAL:1041]",
    "schema.unknown-keyword": "only keywords of apiextensions' JSONSchemaProps",
    "schema.type": "type is one of array, boolean, integer, number, object, string",
    "schema.properties-and-additional-properties": "properties and additionalProperties are exclusive [VAL:1057]",
    "schema.preserve-unknown-fields": "x-kubernetes-preserve-unknown-fields is true or unset [VAL:1145]",
    "schema.pattern": "pattern is a valid RE2 regular expression [STRUCT:301]",
    "schema.default": "a default validates against its schema and has no unknown fields",
    "schema.map-type": "x-kubernetes-map-type is atomic or granular, on objects only",
    "structural.type": "a non-empty type at the root, on every property and on array items [STRUCT:159-171]",
    "structural.root-type": "the root's type is object",
    "structural.items": "an array has items",
    "structural.junctor": "no type, description, default, nullable, additionalProperties or x-kubernetes-* "
                          "inside allOf/anyOf/oneOf/not [STRUCT:308-327]",
    "structural.completeness": "fields named inside allOf/anyOf/oneOf/not are also specified outside",
    "structural.metadata": "metadata may only restrict name and generateName; not in nested contexts "
                           "[STRUCT:124]",
    "structural.root-additional-properties": "no additionalProperties at the root [STRUCT:220]",
    "structural.embedded-resource": "x-kubernetes-embedded-resource needs type object and properties or "
                                    "preserve-unknown-fields [STRUCT:150-191]",
    "structural.int-or-string": "x-kubernetes-int-or-string excludes preserve-unknown-fields and "
                                "embedded-resource [STRUCT:255]",
    "list-type": "x-kubernetes-list-type is atomic, set or map, on arrays only [VAL:1149-1226]",
    "list-type.map": "a map-list has keys that are required (or defaulted), non-nullable, scalar "
                     "properties of object items [VAL:1161-1226,1375-1415]",
    "list-type.set": "set items are atomic and not nullable",
    "cel.syntax": "x-kubernetes-validations rules and messageExpressions parse as CEL",
    "cel.rule": "a rule is non-empty; message without line breaks (and required for a multi-line rule); "
                "reason from the allowed set; fieldPath non-empty [VAL:1230-1270]",
    "subresources.status-root": "with the status subresource only some keywords at the root [VAL:933-940,1587]",
    "subresources.scale": "scale paths: specReplicasPath under .spec, statusReplicasPath under .status",
    "columns.type": "printer-column type is integer, number, string, boolean or date [VAL:55]",
    "columns.format": "printer-column format is int32, int64, float, double, byte, date, date-time or "
                      "password [VAL:56]",
    "columns.json-path": "printer-column jsonPath is set and a simple path starting with '.'",
    "columns.name": "printer-column name is set",
    "selectable-fields": "at most 8, each a path into the schema to a string, boolean or integer, not into "
                         "metadata, unique [VAL:850-868]",
    "conversion": "strategy None or Webhook; a webhook has clientConfig (url xor service) and "
                  "conversionReviewVersions [VAL:620-643]",
    "size.last-applied": "warning: kubectl apply stores the CRD in a 262144-byte annotation",
}

_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_FORBIDDEN = ("$ref", "definitions", "id", "patternProperties", "dependencies", "additionalItems")
_KEYWORDS = {
    "$schema", "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required", "items", "allOf",
    "oneOf", "anyOf", "not", "properties", "additionalProperties", "externalDocs", "example", "nullable",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
    "x-kubernetes-validations", *_FORBIDDEN,
}
_JUNCTOR_FORBIDDEN = ("type", "additionalProperties", "default", "title", "description", "nullable",
                      "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
                      "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
                      "x-kubernetes-map-type", "x-kubernetes-validations")
_ROOT_WITH_STATUS = {"description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum",
                     "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
                     "uniqueItems", "multipleOf", "required", "items", "properties", "externalDocs", "example",
                     "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations"}
_KNOWN = {
    (): {"apiVersion", "kind", "metadata", "spec", "status"},
    ("spec",): {"group", "names", "scope", "versions", "conversion", "preserveUnknownFields"},
    ("spec", "names"): {"plural", "singular", "shortNames", "kind", "listKind", "categories"},
    ("spec", "versions", "*"): {"name", "served", "storage", "deprecated", "deprecationWarning", "schema",
                                "subresources", "additionalPrinterColumns", "selectableFields"},
    ("spec", "versions", "*", "additionalPrinterColumns", "*"): {"name", "type", "format", "description",
                                                                 "priority", "jsonPath"},
    ("spec", "versions", "*", "subresources"): {"status", "scale"},
    ("spec", "versions", "*", "subresources", "scale"): {"specReplicasPath", "statusReplicasPath",
                                                         "labelSelectorPath"},
    ("spec", "conversion"): {"strategy", "webhook"},
    ("spec", "conversion", "webhook"): {"clientConfig", "conversionReviewVersions"},
    ("spec", "conversion", "webhook", "clientConfig"): {"url", "service", "caBundle"},
}
ANNOTATION_LIMIT = 262144


@dataclass
class Problem:
    """One broken rule: its name, the path in the document, a message; ``where`` is file:line."""

    rule: str
    path: Path
    message: str
    severity: str = "error"
    where: str = ""

    def dotted(self) -> str:
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        return out or "<document>"

    def __str__(self) -> str:
        sev = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.where}: {sev}[{self.rule}] {self.dotted()}: {self.message}"


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, rule: str, path: Path, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(rule, tuple(path), message, severity))


def validate_documents(docs: list[Document]) -> list[Problem]:
    """Problems of every document, located (file:line) in its source."""
    out: list[Problem] = []
    for doc in docs:
        for p in validate_crd(doc.data):
            p.where = doc.where(p.path)
            out.append(p)
    return out


def validate_crd(crd: Any) -> list[Problem]:
    """Every rule of ``RULES`` against one CRD document (paths relative to the document)."""
    c = _Checker()
    if not isinstance(crd, dict):
        c.add("document", (), "not a mapping")
        return c.problems
    if crd.get("kind") != "CustomResourceDefinition":
        c.add("document", ("kind",), f"kind is {crd.get('kind')!r}, not CustomResourceDefinition")
        return c.problems
    api = crd.get("apiVersion")
    if api == "apiextensions.k8s.io/v1beta1":
        c.add("api-version", ("apiVersion",), "v1beta1 CRDs are not served since Kubernetes 1.22; "
                                              "run 'crd convert' first")
        return c.problems
    if api != "apiextensions.k8s.io/v1":
        c.add("api-version", ("apiVersion",), f"{api!r}: expected apiextensions.k8s.io/v1")
        return c.problems
    _shape(c, crd, (), _CRD_SHAPE)
    if c.problems:  # the deeper rules assume the API's types; report those first
        return c.problems
    _unknown_fields(c, crd, ())
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        c.add("names.required", ("spec",), "spec is missing")
        return c.problems
    _names(c, crd, spec)
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        c.add("scope", ("spec", "scope"), f"must be Namespaced or Cluster, not {spec.get('scope')!r}")
    if spec.get("preserveUnknownFields") is True:
        c.add("spec.preserve-unknown-fields", ("spec", "preserveUnknownFields"),
              "cannot be true in v1; set x-kubernetes-preserve-unknown-fields: true in the schema instead")
    _versions(c, spec, crd.get("status"))
    _conversion(c, spec)
    size = len(json.dumps(crd, separators=(",", ":")))
    if size > ANNOTATION_LIMIT:
        c.add("size.last-applied", (), f"{size} bytes: client-side 'kubectl apply' will fail (the "
                                       f"last-applied annotation holds at most {ANNOTATION_LIMIT}); use server-side "
                                       "apply, or shorten descriptions (generate --max-desc-len)", "warning")
    return c.problems


_STR, _BOOL, _NUM, _INT = "a string", "a boolean", "a number", "an integer"
_STRS = ["a string"]
_SCHEMA_SHAPE: dict[str, Any] = {}  # filled below: a schema's keywords refer to schemas again
_SCHEMA_SHAPE.update({
    "type": _STR, "format": _STR, "pattern": _STR, "description": _STR, "title": _STR,
    "minimum": _NUM, "maximum": _NUM, "multipleOf": _NUM, "exclusiveMinimum": _BOOL, "exclusiveMaximum": _BOOL,
    "minLength": _INT, "maxLength": _INT, "minItems": _INT, "maxItems": _INT, "minProperties": _INT,
    "maxProperties": _INT, "required": _STRS, "enum": [None], "nullable": _BOOL, "uniqueItems": _BOOL,
    "properties": {"*": _SCHEMA_SHAPE}, "items": _SCHEMA_SHAPE, "not": _SCHEMA_SHAPE,
    "allOf": [_SCHEMA_SHAPE], "anyOf": [_SCHEMA_SHAPE], "oneOf": [_SCHEMA_SHAPE],
    "x-kubernetes-preserve-unknown-fields": _BOOL, "x-kubernetes-embedded-resource": _BOOL,
    "x-kubernetes-int-or-string": _BOOL, "x-kubernetes-list-type": _STR, "x-kubernetes-map-type": _STR,
    "x-kubernetes-list-map-keys": _STRS,
    "x-kubernetes-validations": [{"rule": _STR, "message": _STR, "messageExpression": _STR, "reason": _STR,
                                  "fieldPath": _STR, "optionalOldSelf": _BOOL}],
})
_CRD_SHAPE: dict[str, Any] = {
    "apiVersion": _STR, "kind": _STR,
    "metadata": {"name": _STR, "labels": {"*": _STR}, "annotations": {"*": _STR}},
    "status": {"storedVersions": _STRS},
    "spec": {
        "group": _STR, "scope": _STR, "preserveUnknownFields": _BOOL,
        "names": {"plural": _STR, "singular": _STR, "kind": _STR, "listKind": _STR, "shortNames": _STRS,
                  "categories": _STRS},
        "versions": [{
            "name": _STR, "served": _BOOL, "storage": _BOOL, "deprecated": _BOOL, "deprecationWarning": _STR,
            "schema": {"openAPIV3Schema": _SCHEMA_SHAPE},
            "subresources": {"status": {}, "scale": {"specReplicasPath": _STR, "statusReplicasPath": _STR,
                                                     "labelSelectorPath": _STR}},
            "additionalPrinterColumns": [{"name": _STR, "type": _STR, "format": _STR, "description": _STR,
                                          "priority": _INT, "jsonPath": _STR}],
            "selectableFields": [{"jsonPath": _STR}],
        }],
        "conversion": {"strategy": _STR, "webhook": {
            "clientConfig": {"url": _STR, "caBundle": _STR, "service": {"name": _STR, "namespace": _STR,
                                                                        "path": _STR, "port": _INT}},
            "conversionReviewVersions": _STRS}},
    },
}


def _shape(c: _Checker, node: Any, path: Path, shape: Any) -> None:
    """``node`` has the JSON type ``shape`` asks for: a dict of field shapes ({"*": ...} for any key), a
    one-element list (a list of that), a description string of a scalar type, or None (anything)."""
    if shape is None:
        return
    if isinstance(shape, dict):
        if not isinstance(node, dict):
            c.add("shape", path, f"must be a mapping, not {_json_name(node)}")
            return
        for key, value in node.items():
            sub = shape.get(key, shape.get("*"))
            if sub is not None:
                _shape(c, value, (*path, key), sub)
            if key == "additionalProperties" and shape is _SCHEMA_SHAPE and not isinstance(value, bool | dict):
                c.add("shape", (*path, key), f"must be a schema or a boolean, not {_json_name(value)}")
            elif key == "additionalProperties" and isinstance(value, dict) and shape is _SCHEMA_SHAPE:
                _shape(c, value, (*path, key), _SCHEMA_SHAPE)
    elif isinstance(shape, list):
        if not isinstance(node, list):
            c.add("shape", path, f"must be a list, not {_json_name(node)}")
            return
        for i, item in enumerate(node):
            _shape(c, item, (*path, i), shape[0])
    else:
        ok = {_STR: isinstance(node, str), _BOOL: isinstance(node, bool),
              _NUM: isinstance(node, int | float) and not isinstance(node, bool),
              _INT: isinstance(node, int) and not isinstance(node, bool)}[shape]
        if not ok:
            c.add("shape", path, f"must be {shape}, not {_json_name(node)}")


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return "a list" if isinstance(value, list) else "a mapping"


def _unknown_fields(c: _Checker, node: Any, path: Path) -> None:
    pattern = tuple("*" if isinstance(p, int) else p for p in path)
    known = _KNOWN.get(pattern)
    if isinstance(node, dict):
        if known is not None:
            for key in node:
                if key not in known:
                    hint = " (v1 spells it jsonPath)" if key == "JSONPath" else ""
                    hint = hint or (" (v1beta1 field: crd convert)" if key in ("validation", "version",
                                    "additionalPrinterColumns", "subresources") and pattern == ("spec",) else "")
                    c.add("unknown-field", (*path, key), f"unknown field {key!r}{hint}")
        for key, value in node.items():
            if key != "schema":
                _unknown_fields(c, value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _unknown_fields(c, item, (*path, i))


def _dns1035(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1035.fullmatch(value))


def _names(c: _Checker, crd: dict[str, Any], spec: dict[str, Any]) -> None:
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        c.add("names.group", ("spec", "group"), "group is required")
    elif not (len(group) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(group)):
        c.add("names.group", ("spec", "group"), f"{group!r} is not a DNS-1123 subdomain (lower case, digits, '-', '.')")
    elif "." not in group:
        c.add("names.group", ("spec", "group"), f"{group!r} needs at least one dot (e.g. {group}.example.com)")
    elif group in ("k8s.io", "kubernetes.io") or group.endswith((".k8s.io", ".kubernetes.io")):
        annotations = (crd.get("metadata") or {}).get("annotations") or {}
        if not annotations.get("api-approved.kubernetes.io"):
            c.add("names.protected-group", ("metadata",),
                  f"group {group} is protected: set annotation api-approved.kubernetes.io to the approving PR's "
                  "URL (or 'unapproved, ...')")
    names = spec.get("names")
    if not isinstance(names, dict):
        c.add("names.required", ("spec", "names"), "names is required")
        names = {}
    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            c.add("names.required", ("spec", "names"), f"names.{key} is required")
    for key in ("plural", "singular"):
        value = names.get(key)
        if value and not _dns1035(value):
            c.add("names.dns1035", ("spec", "names", key), f"{value!r} is not a DNS-1035 label "
                                                           "(lower case, starts with a letter, at most 63)")
    for key in ("shortNames", "categories"):
        for i, value in enumerate(names.get(key) or []):
            if not _dns1035(value):
                c.add("names.dns1035", ("spec", "names", key, i), f"{value!r} is not a DNS-1035 label")
    for key in ("kind", "listKind"):
        value = names.get(key)
        if value and not (isinstance(value, str) and _dns1035(value.lower())):
            c.add("names.kind", ("spec", "names", key), f"{value!r} is not a DNS-1035 label once lower-cased")
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        c.add("names.kind-listkind", ("spec", "names", "listKind"), "listKind must differ from kind")
    name = (crd.get("metadata") or {}).get("name")
    expected = f"{names.get('plural')}.{group}"
    if not name:
        c.add("names.crd-name", ("metadata",), f"metadata.name is required (it must be {expected})")
    elif names.get("plural") and group and name != expected:
        c.add("names.crd-name", ("metadata", "name"), f"{name!r} must be <plural>.<group>: {expected}")
    elif not (isinstance(name, str) and _DNS1123_SUBDOMAIN.fullmatch(name)):
        c.add("names.crd-name", ("metadata", "name"), f"{name!r} is not a DNS subdomain")


def _versions(c: _Checker, spec: dict[str, Any], crd_status: Any = None) -> None:
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        c.add("versions.required", ("spec", "versions"), "at least one version is required")
        return
    seen: set[str] = set()
    storage = []
    for i, v in enumerate(versions):
        path = ("spec", "versions", i)
        if not isinstance(v, dict):
            c.add("versions.name", path, "a version must be a mapping")
            continue
        name = v.get("name")
        if not _dns1035(name):
            c.add("versions.name", (*path, "name"), f"{name!r} is not a DNS-1035 label (e.g. v1, v1beta1)")
        if name in seen:
            c.add("versions.unique", (*path, "name"), f"version {name} is listed twice")
        seen.add(name)
        if v.get("storage") is True:
            storage.append(name)
        if "deprecationWarning" in v:
            if not v.get("deprecated"):
                c.add("versions.deprecation", (*path, "deprecationWarning"), "only allowed with deprecated: true")
            elif len(str(v["deprecationWarning"])) > 256:
                c.add("versions.deprecation", (*path, "deprecationWarning"), "at most 256 characters")
        _version(c, v, path)
    stored = (crd_status.get("storedVersions") or []) if isinstance(crd_status, dict) else []
    for i, name in enumerate(stored):
        if name not in seen:
            c.add("versions.stored", ("status", "storedVersions", i),
                  f"version {name} holds stored objects (status.storedVersions): keep it in spec.versions until "
                  "they are migrated")
    if len(storage) != 1:
        c.add("versions.storage", ("spec", "versions"),
              f"exactly one version must have storage: true, found {len(storage)}"
              + (f" ({', '.join(map(str, storage))})" if storage else ""))


def _version(c: _Checker, v: dict[str, Any], path: Path) -> None:
    schema = (v.get("schema") or {}).get("openAPIV3Schema") if isinstance(v.get("schema"), dict) else None
    spath = (*path, "schema", "openAPIV3Schema")
    sub = v.get("subresources") or {}
    if not isinstance(schema, dict):
        c.add("schema.required", (*path, "schema") if "schema" in v else path,
              "schema.openAPIV3Schema is required in v1 (without one every field would be pruned)")
        schema = None
    else:
        _schema(c, schema, spath, "root")
        if isinstance(sub, dict) and "status" in sub:
            extra = sorted(k for k in schema if k not in _ROOT_WITH_STATUS)
            if extra:
                c.add("subresources.status-root", spath,
                      f"with the status subresource the root may not have {', '.join(extra)}")
    if isinstance(sub, dict) and isinstance(sub.get("scale"), dict):
        scale = sub["scale"]
        for key, prefixes in (("specReplicasPath", (".spec.",)), ("statusReplicasPath", (".status.",)),
                              ("labelSelectorPath", (".spec.", ".status."))):
            value = scale.get(key)
            if value is None:
                if key != "labelSelectorPath":
                    c.add("subresources.scale", (*path, "subresources", "scale"), f"{key} is required")
            elif not (isinstance(value, str) and value.startswith(prefixes) and len(value) > len(prefixes[0])):
                c.add("subresources.scale", (*path, "subresources", "scale", key),
                      f"{value!r} must be a path under {' or '.join(p.rstrip('.') for p in prefixes)}")
    for i, col in enumerate(v.get("additionalPrinterColumns") or []):
        _column(c, col, (*path, "additionalPrinterColumns", i))
    fields = v.get("selectableFields") or []
    if len(fields) > 8:
        c.add("selectable-fields", (*path, "selectableFields"), f"at most 8 selectable fields, found {len(fields)}")
    seen: set[str] = set()
    for i, f in enumerate(fields):
        fpath = (*path, "selectableFields", i)
        jp = (f or {}).get("jsonPath") if isinstance(f, dict) else None
        if not jp:
            c.add("selectable-fields", fpath, "jsonPath is required")
            continue
        if jp in seen:
            c.add("selectable-fields", (*fpath, "jsonPath"), f"{jp} is listed twice")
        seen.add(jp)
        if jp.startswith(".metadata"):
            c.add("selectable-fields", (*fpath, "jsonPath"), "must not point into metadata")
            continue
        target = schema_at(schema, jp) if schema else None
        if target is None:
            c.add("selectable-fields", (*fpath, "jsonPath"), f"{jp} is not a field of the schema")
        elif target.get("type") not in ("string", "boolean", "integer"):
            c.add("selectable-fields", (*fpath, "jsonPath"),
                  f"{jp} is a {target.get('type', 'untyped field')}; it must be a string, boolean or integer")


def schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema of the field at a simple JSON path (``.spec.replicas``), or None if there is none."""
    if not json_path.startswith("."):
        return None
    node: Any = schema
    for part in json_path[1:].split("."):
        if not isinstance(node, dict) or part not in (node.get("properties") or {}):
            return None
        node = node["properties"][part]
    return node if isinstance(node, dict) else None


def _column(c: _Checker, col: Any, path: Path) -> None:
    if not isinstance(col, dict):
        c.add("columns.name", path, "a printer column must be a mapping")
        return
    if not col.get("name"):
        c.add("columns.name", path, "name is required")
    if col.get("type") not in PRINTER_TYPES:
        c.add("columns.type", (*path, "type") if "type" in col else path,
              f"type {col.get('type')!r} must be one of {', '.join(sorted(PRINTER_TYPES))}")
    fmt = col.get("format")
    if fmt and fmt not in PRINTER_FORMATS:
        c.add("columns.format", (*path, "format"),
              f"format {fmt!r} must be one of {', '.join(sorted(PRINTER_FORMATS))}")
    jp = col.get("jsonPath")
    if not jp:
        c.add("columns.json-path", path, "jsonPath is required" + (" (v1 spells JSONPath as jsonPath)"
                                                                    if "JSONPath" in col else ""))
    elif not (isinstance(jp, str) and jp.startswith(".")):
        c.add("columns.json-path", (*path, "jsonPath"), f"{jp!r} must be a simple JSON path starting with '.'")


def _conversion(c: _Checker, spec: dict[str, Any]) -> None:
    conv = spec.get("conversion")
    if conv is None:
        return
    path = ("spec", "conversion")
    if not isinstance(conv, dict):
        c.add("conversion", path, "must be a mapping")
        return
    strategy = conv.get("strategy", "None")
    if strategy == "None":
        if conv.get("webhook") is not None:
            c.add("conversion", (*path, "webhook"), "must not be set unless strategy is Webhook")
        return
    if strategy != "Webhook":
        c.add("conversion", (*path, "strategy"), f"{strategy!r} must be None or Webhook")
        return
    webhook = conv.get("webhook")
    if not isinstance(webhook, dict):
        c.add("conversion", path, "strategy Webhook needs webhook.clientConfig and conversionReviewVersions")
        return
    client = webhook.get("clientConfig")
    if not isinstance(client, dict) or bool(client.get("url")) == bool(client.get("service")):
        c.add("conversion", (*path, "webhook", "clientConfig") if client else (*path, "webhook"),
              "clientConfig needs exactly one of url and service")
    elif client.get("url") and not str(client["url"]).startswith("https://"):
        c.add("conversion", (*path, "webhook", "clientConfig", "url"), "must be an https:// URL")
    elif client.get("service"):
        svc = client["service"]
        if not isinstance(svc, dict) or not svc.get("name") or not svc.get("namespace"):
            c.add("conversion", (*path, "webhook", "clientConfig", "service"), "needs name and namespace")
    versions = webhook.get("conversionReviewVersions")
    if not versions:
        c.add("conversion", (*path, "webhook"), "conversionReviewVersions is required")
    elif not any(v in ("v1", "v1beta1") for v in versions):
        c.add("conversion", (*path, "webhook", "conversionReviewVersions"), "must include v1 or v1beta1")


# --- schemas ---------------------------------------------------------------------------------


def _schema(c: _Checker, s: Any, path: Path, level: str, in_metadata_ctx: bool = False) -> None:
    """One schema node; ``level`` is root, field or item (the server's structural levels)."""
    if not isinstance(s, dict):
        c.add("schema.type", path, "a schema must be a mapping")
        return
    for key in s:
        if key in _FORBIDDEN:
            c.add("schema.forbidden-keyword", (*path, key), f"{key} is not supported by the API server"
                  + ("; inline the referenced schema" if key in ("$ref", "definitions") else ""))
        elif key not in _KEYWORDS:
            c.add("schema.unknown-keyword", (*path, key), f"unknown keyword {key!r}"
                  + (" (JSON Schema 2020-12; OpenAPI v3.0 has no $defs: inline it)" if key == "$defs" else ""))
    typ = s.get("type")
    if typ is not None and typ not in _TYPES:
        c.add("schema.type", (*path, "type"), f"{typ!r} must be one of {', '.join(_TYPES)}")
    if s.get("uniqueItems") is True:
        c.add("schema.unique-items", (*path, "uniqueItems"),
              "uniqueItems: true is forbidden (quadratic cost); use x-kubernetes-list-type: set")
    props = s.get("properties")
    addl = s.get("additionalProperties")
    if props and addl is not None and addl is not True:
        c.add("schema.properties-and-additional-properties", (*path, "additionalProperties"),
              "properties and additionalProperties are mutually exclusive")
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        c.add("schema.preserve-unknown-fields", (*path, "x-kubernetes-preserve-unknown-fields"),
              "must be true or left out")
    int_or_string = s.get("x-kubernetes-int-or-string") is True
    preserve = s.get("x-kubernetes-preserve-unknown-fields") is True
    embedded = s.get("x-kubernetes-embedded-resource") is True
    if int_or_string and preserve:
        c.add("structural.int-or-string", (*path, "x-kubernetes-preserve-unknown-fields"),
              "must be false if x-kubernetes-int-or-string is true")
    if int_or_string and embedded:
        c.add("structural.int-or-string", (*path, "x-kubernetes-embedded-resource"),
              "must be false if x-kubernetes-int-or-string is true")
    # structural: types
    if embedded and typ != "object":
        c.add("structural.embedded-resource", (*path, "type"), "must be object if x-kubernetes-embedded-resource")
    elif not typ and not int_or_string and not preserve:
        what = {"root": "at the root", "item": "for array items", "field": "for object fields"}[level]
        c.add("structural.type", path, f"type must not be empty {what} (the schema is not structural)")
    if level == "root" and typ and typ != "object":
        c.add("structural.root-type", (*path, "type"), f"must be object at the root, not {typ}")
    if level == "root" and addl is not None:
        c.add("structural.root-additional-properties", (*path, "additionalProperties"),
              "must not be used at the root")
    if embedded and addl is not None:
        c.add("structural.embedded-resource", (*path, "additionalProperties"),
              "must not be used with x-kubernetes-embedded-resource")
    if embedded and not preserve and not props:
        c.add("structural.embedded-resource", path,
              "x-kubernetes-embedded-resource needs properties or x-kubernetes-preserve-unknown-fields")
    if typ == "array" and "items" not in s:
        c.add("structural.items", path, "an array must specify items")
    check_meta = level == "root" or embedded
    if isinstance(props, dict):
        for key in ("kind", "apiVersion"):
            if check_meta and key in props and isinstance(props[key], dict) and props[key].get("type") != "string":
                c.add("structural.metadata", (*path, "properties", key, "type"), "must be string")
        if "metadata" in props:
            _metadata(c, props["metadata"], (*path, "properties", "metadata"), level == "root", check_meta)
    if s.get("pattern") is not None:
        _pattern(c, s["pattern"], (*path, "pattern"))
    _junctors(c, s, path, int_or_string)
    _list_type(c, s, path)
    mt = s.get("x-kubernetes-map-type")
    if mt is not None:
        if typ != "object":
            c.add("schema.map-type", (*path, "x-kubernetes-map-type"), "only allowed on type: object")
        if mt not in ("atomic", "granular"):
            c.add("schema.map-type", (*path, "x-kubernetes-map-type"), f"{mt!r} must be atomic or granular")
    _cel(c, s, path)
    if "default" in s:
        for msg in check_value(s, s["default"]):
            c.add("schema.default", (*path, "default"), msg)
    # children
    if isinstance(props, dict):
        for name, child in props.items():
            if name == "metadata" and level == "root":
                continue
            _schema(c, child, (*path, "properties", name), "field")
    if isinstance(s.get("items"), dict):
        _schema(c, s["items"], (*path, "items"), "item")
    elif isinstance(s.get("items"), list):
        c.add("structural.items", (*path, "items"), "items must be one schema, not a list (tuples are not structural)")
    if isinstance(addl, dict):
        _schema(c, addl, (*path, "additionalProperties"), "field")


def _metadata(c: _Checker, m: Any, path: Path, root: bool, check: bool) -> None:
    """The root's (or an embedded object's) metadata: type object; at the root nothing but name and
    generateName may be restricted, since the server owns ObjectMeta's schema."""
    if not isinstance(m, dict):
        return
    if check and m.get("type") != "object":
        c.add("structural.metadata", path, "metadata must be type: object")
    if root:
        props = m.get("properties") or {}
        extra = sorted(set(m) - {"type", "properties", "default"})
        extra += sorted(f"properties.{k}" for k in set(props) - {"name", "generateName"})
        if extra:
            c.add("structural.metadata", path, "metadata may only restrict name and generateName at the "
                                               f"root, not {', '.join(extra)}")


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled as the API server does (Go's regexp is RE2); raises ValueError with the
    engine's message. Without google-re2, Python's ``re`` is the (more lenient) fallback."""
    try:
        import re2
    except ImportError:
        try:
            return re.compile(pattern)
        except re.error as e:
            raise ValueError(str(e)) from None
    options = re2.Options()
    options.log_errors = False  # else RE2 logs every bad pattern to stderr itself
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        detail = e.args[0] if e.args else e
        raise ValueError(detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)) from None


def _pattern(c: _Checker, pattern: Any, path: Path) -> None:
    if not isinstance(pattern, str):
        c.add("schema.pattern", path, "pattern must be a string")
        return
    try:
        compile_pattern(pattern)
    except ValueError as e:
        c.add("schema.pattern", path, f"{pattern!r} is not a valid RE2 regular expression "
                                      f"(Go's regexp: no look-around or backreferences): {e}")


_INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]


def _junctors(c: _Checker, s: dict[str, Any], path: Path, int_or_string: bool) -> None:
    props = s.get("properties") or {}
    for junctor in ("allOf", "anyOf", "oneOf", "not"):
        if junctor not in s:
            continue
        branches = s[junctor] if junctor != "not" else [s[junctor]]
        if not isinstance(branches, list):
            c.add("structural.junctor", (*path, junctor), f"{junctor} must be a list")
            continue
        skip = junctor == "anyOf" and int_or_string and branches == _INT_OR_STRING_ANYOF
        for i, b in enumerate(branches):
            bpath = (*path, junctor) if junctor == "not" else (*path, junctor, i)
            skip_this = skip or (junctor == "allOf" and i == 0 and int_or_string and isinstance(b, dict)
                                 and b.get("anyOf") == _INT_OR_STRING_ANYOF and set(b) == {"anyOf"})
            if not skip_this:
                _nested(c, b, bpath, props, s)


def _nested(c: _Checker, v: Any, path: Path, outer_props: dict[str, Any], outer: dict[str, Any]) -> None:
    """A schema under allOf/anyOf/oneOf/not: value validation only, nothing structural."""
    if not isinstance(v, dict):
        return
    for key in _JUNCTOR_FORBIDDEN:
        if key in v:
            c.add("structural.junctor", (*path, key), f"{key} must not be set inside allOf/anyOf/oneOf/not "
                                                       "(the schema would not be structural)")
    for name, sub in (v.get("properties") or {}).items():
        if name == "metadata":
            c.add("structural.metadata", (*path, "properties", name), "must not be specified in a nested context")
        if name not in outer_props and not outer.get("x-kubernetes-preserve-unknown-fields"):
            c.add("structural.completeness", (*path, "properties", name),
                  f"field {name} is named in a junctor but not specified in properties outside it")
        _nested(c, sub, (*path, "properties", name), (outer_props.get(name) or {}).get("properties") or {},
                outer_props.get(name) or {})
    if isinstance(v.get("items"), dict):
        if "items" not in outer:
            c.add("structural.completeness", (*path, "items"), "items named in a junctor but not outside it")
        _nested(c, v["items"], (*path, "items"), (outer.get("items") or {}).get("properties") or {},
                outer.get("items") or {})
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, b in enumerate(v.get(junctor) or []):
            _nested(c, b, (*path, junctor, i), outer_props, outer)
    if "not" in v:
        _nested(c, v["not"], (*path, "not"), outer_props, outer)
    if v.get("pattern") is not None:
        _pattern(c, v["pattern"], (*path, "pattern"))


def _list_type(c: _Checker, s: dict[str, Any], path: Path) -> None:
    lt = s.get("x-kubernetes-list-type")
    keys = s.get("x-kubernetes-list-map-keys")
    items = s.get("items") if isinstance(s.get("items"), dict) else None
    if keys and lt != "map":
        c.add("list-type.map", (*path, "x-kubernetes-list-type"), "must be map if x-kubernetes-list-map-keys is set")
    if lt is None:
        return
    if s.get("type") != "array":
        c.add("list-type", (*path, "x-kubernetes-list-type"), "only allowed on type: array")
    if lt not in ("atomic", "set", "map"):
        c.add("list-type", (*path, "x-kubernetes-list-type"), f"{lt!r} must be atomic, set or map")
        return
    if lt in ("set", "map") and items and items.get("nullable"):
        c.add(f"list-type.{lt}", (*path, "items", "nullable"), f"items cannot be nullable in a list of type {lt}")
    if lt == "set" and items:
        if items.get("type") == "array" and items.get("x-kubernetes-list-type", "atomic") != "atomic":
            c.add("list-type.set", (*path, "items", "x-kubernetes-list-type"), "set items must be atomic")
        if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            c.add("list-type.set", (*path, "items"), "object items of a set need x-kubernetes-map-type: atomic")
    if lt == "map":
        if not keys:
            c.add("list-type.map", (*path, "x-kubernetes-list-type"),
                  "a map-list needs x-kubernetes-list-map-keys")
        if not items:
            c.add("list-type.map", path, "a map-list needs an items schema")
            return
        if items.get("type") != "object":
            c.add("list-type.map", (*path, "items", "type"), "items of a map-list must be objects")
            return
        iprops = items.get("properties") or {}
        required = set(items.get("required") or [])
        for k in keys or []:
            if k not in iprops:
                c.add("list-type.map", (*path, "x-kubernetes-list-map-keys"),
                      f"key {k!r} is not a property of the items")
                continue
            kp = iprops[k] if isinstance(iprops[k], dict) else {}
            if kp.get("type") in ("array", "object"):
                c.add("list-type.map", (*path, "items", "properties", k, "type"), f"key {k!r} must be a scalar")
            if k not in required and "default" not in kp:
                c.add("list-type.map", (*path, "items", "properties", k),
                      f"key {k!r} must be required or have a default")
            if kp.get("nullable"):
                c.add("list-type.map", (*path, "items", "properties", k, "nullable"), f"key {k!r} cannot be nullable")
        if keys and len(set(keys)) != len(keys):
            c.add("list-type.map", (*path, "x-kubernetes-list-map-keys"), "keys must not repeat")


def _cel(c: _Checker, s: dict[str, Any], path: Path) -> None:
    rules = s.get("x-kubernetes-validations")
    if rules is None:
        return
    if not isinstance(rules, list):
        c.add("cel.rule", (*path, "x-kubernetes-validations"), "must be a list of rules")
        return
    for i, r in enumerate(rules):
        rpath = (*path, "x-kubernetes-validations", i)
        if not isinstance(r, dict):
            c.add("cel.rule", rpath, "a rule must be a mapping with 'rule'")
            continue
        rule = str(r.get("rule") or "").strip()
        msg = r.get("message")
        if not rule:
            c.add("cel.rule", rpath, "rule is not specified")
        elif msg is not None and not str(msg).strip():
            c.add("cel.rule", (*rpath, "message"), "must be non-empty if specified")
        elif msg is not None and ("\n" in str(msg).strip() or "\r" in str(msg).strip()):
            c.add("cel.rule", (*rpath, "message"), "must not contain line breaks")
        elif "\n" in rule and not (msg and str(msg).strip()):
            c.add("cel.rule", (*rpath, "message"), "a message is required when the rule has line breaks")
        if r.get("reason") is not None and r["reason"] not in CEL_REASONS:
            c.add("cel.rule", (*rpath, "reason"), f"{r['reason']!r} must be one of {', '.join(CEL_REASONS)}")
        fp = r.get("fieldPath")
        if fp is not None and (not str(fp).strip() or "\n" in str(fp)):
            c.add("cel.rule", (*rpath, "fieldPath"), "must be a non-empty, single-line path")
        elif fp is not None and not _field_path_ok(s, str(fp)):
            c.add("cel.rule", (*rpath, "fieldPath"), f"{fp!r} is not a valid path into this schema")
        if r.get("messageExpression") is not None and not str(r["messageExpression"]).strip():
            c.add("cel.rule", (*rpath, "messageExpression"), "must be non-empty if specified")
        for key in ("rule", "messageExpression"):
            expr = r.get(key)
            if isinstance(expr, str) and expr.strip():
                err = cel_syntax_error(expr)
                if err:
                    c.add("cel.syntax", (*rpath, key), err)


def _field_path_ok(schema: dict[str, Any], fp: str) -> bool:
    """A fieldPath of a rule: ``.a.b``, ``['a-b']`` or ``.list[0]`` into this schema's properties."""
    node: Any = schema
    for m in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^']*)'\]|\[(\d+)\]|(.)", fp):
        if m.group(4) is not None:
            return False
        if m.group(3) is not None:
            if not isinstance(node, dict) or node.get("type") != "array":
                return False
            node = node.get("items") or {}
            continue
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if not isinstance(node, dict):
            return False
        if name in (node.get("properties") or {}):
            node = node["properties"][name]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


_cel_env: Any = None


def cel_syntax_error(expr: str) -> str | None:
    """None if ``expr`` parses as CEL, else the parser's message with a caret under the position.

    Kubernetes enables CEL's optional syntax (``a.?b``, ``[?0]``) which cel-python's grammar lacks;
    those markers are read as plain selection/indexing, which has the same syntax around them.
    """
    global _cel_env
    import logging

    logging.getLogger("celpy").setLevel(logging.CRITICAL)
    import celpy
    from celpy.celparser import CELParseError

    if _cel_env is None:
        _cel_env = celpy.Environment()
    text = re.sub(r"\.\?(?=\s*[A-Za-z_])", ". ", expr)
    text = re.sub(r"\[\?", "[ ", text)
    try:
        _cel_env.compile(text)
    except CELParseError as e:
        line = getattr(e, "line", None)
        col = getattr(e, "column", None)
        at = f" at {line}:{col}" if line is not None else ""
        lines = expr.splitlines() or [expr]
        caret = ""
        if line and col and 0 < line <= len(lines):
            caret = f": {lines[line - 1]!r}, column {col}"
        return f"CEL syntax error{at}{caret}"
    except Exception as e:  # any other failure of the parser is a parse failure too
        return f"CEL syntax error: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return None


# --- values against schemas (defaults) -------------------------------------------------------


def check_value(s: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Why ``value`` does not validate against schema ``s`` (empty if it does): what the server's
    check of defaults finds -- type, enum, bounds, lengths, pattern, required, unknown fields."""
    out: list[str] = []
    at = where or "value"
    if value is None:
        if not s.get("nullable"):
            out.append(f"{at}: null but the schema is not nullable")
        return out
    typ = s.get("type")
    if s.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            out.append(f"{at}: must be an integer or a string")
        return out
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
        None: True,
    }.get(typ, True)
    if not ok:
        out.append(f"{at}: {json.dumps(value)} is not of type {typ}")
        return out
    if "enum" in s and value not in s["enum"]:
        out.append(f"{at}: {json.dumps(value)} is not one of {json.dumps(s['enum'])}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = s.get("minimum"), s.get("maximum")
        if lo is not None and (value < lo or (s.get("exclusiveMinimum") and value == lo)):
            out.append(f"{at}: {value} is below the minimum {lo}")
        if hi is not None and (value > hi or (s.get("exclusiveMaximum") and value == hi)):
            out.append(f"{at}: {value} is above the maximum {hi}")
        mult = s.get("multipleOf")
        if mult and (value / mult) != int(value / mult):
            out.append(f"{at}: {value} is not a multiple of {mult}")
    if isinstance(value, str):
        if s.get("minLength") is not None and len(value) < s["minLength"]:
            out.append(f"{at}: shorter than {s['minLength']}")
        if s.get("maxLength") is not None and len(value) > s["maxLength"]:
            out.append(f"{at}: longer than {s['maxLength']}")
        if isinstance(s.get("pattern"), str):
            try:
                if not compile_pattern(s["pattern"]).search(value):
                    out.append(f"{at}: {value!r} does not match {s['pattern']!r}")
            except ValueError:  # an invalid pattern is reported by schema.pattern
                pass
    if isinstance(value, list):
        if s.get("minItems") is not None and len(value) < s["minItems"]:
            out.append(f"{at}: fewer than {s['minItems']} items")
        if s.get("maxItems") is not None and len(value) > s["maxItems"]:
            out.append(f"{at}: more than {s['maxItems']} items")
        if isinstance(s.get("items"), dict):
            for i, item in enumerate(value):
                out.extend(check_value(s["items"], item, f"{at}[{i}]"))
    if isinstance(value, dict):
        props = s.get("properties") or {}
        for req in s.get("required") or []:
            if req not in value:
                out.append(f"{at}: missing required field {req}")
        addl = s.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                out.extend(check_value(props[k], v, f"{at}.{k}"))
            elif isinstance(addl, dict):
                out.extend(check_value(addl, v, f"{at}.{k}"))
            elif not s.get("x-kubernetes-preserve-unknown-fields") and addl is not True and (props or addl is None):
                out.append(f"{at}: unknown field {k} (it would be pruned)")
    return out
