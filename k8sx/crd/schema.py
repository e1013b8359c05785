"""Structural OpenAPI v3 schemas for CRDs, from three sources: field specs, Python types, samples.

The API server accepts only *structural* schemas (a ``type`` on every node, no ``$ref``, no
``anyOf`` of types, OpenAPI 3.0 booleans for exclusive bounds). Each source is turned into such a
schema here, so assemble.py only wraps it in a CRD:

* ``--field spec.replicas:integer:minimum=1`` specs (:func:`from_fields`);
* pydantic models and dataclasses with ``Annotated`` constraints (:func:`from_model`): pydantic's
  JSON Schema 2020-12 output is translated (``$defs`` inlined, ``Optional`` -> ``nullable``,
  numeric exclusive bounds -> booleans, ``set`` -> list-type set, titles and ``default: null`` dropped);
* sample custom objects (:func:`from_samples`), types inferred and merged across samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from k8sx.crd import markers
from k8sx.errors import K8sxError, UsageError

# --field types -> schema; "[]T" is a list of T, "map[T]" a string-keyed map of T.
SCALAR_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "int": {"type": "integer"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "number": {"type": "number"},
    "float": {"type": "number", "format": "float"},
    "double": {"type": "number", "format": "double"},
    "boolean": {"type": "boolean"},
    "bool": {"type": "boolean"},
    "object": {"type": "object"},
    "date": {"type": "string", "format": "date"},
    "date-time": {"type": "string", "format": "date-time"},
    "byte": {"type": "string", "format": "byte"},
    "duration": {"type": "string", "format": "duration"},
    "quantity": {**markers.INT_OR_STRING, "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                                                     r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"},
    "int-or-string": dict(markers.INT_OR_STRING),
    "any": {"x-kubernetes-preserve-unknown-fields": True},
    "embedded": {"type": "object", "x-kubernetes-embedded-resource": True,
                 "x-kubernetes-preserve-unknown-fields": True},
}

RESERVED_ROOT = ("apiVersion", "kind", "metadata")


def type_schema(text: str, where: str) -> dict[str, Any]:
    """The schema of a ``--field`` type: ``string``, ``[]integer``, ``map[string]``, ``[]map[int32]``."""
    if text.startswith("[]"):
        return {"type": "array", "items": type_schema(text[2:], where)}
    m = re.fullmatch(r"map\[(.*)\]", text)
    if m:
        return {"type": "object", "additionalProperties": type_schema(m.group(1) or "string", where)}
    if text in SCALAR_TYPES:
        return _copy(SCALAR_TYPES[text])
    raise UsageError(f"{where}: unknown type {text!r}",
                     hint="types: " + ", ".join(SCALAR_TYPES) + ", []T (list of T), map[T] (map of T)")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and brackets (so ``pattern="a{1,3}",enum=[1,2]`` works)."""
    parts, depth, quoted, cur = [], 0, False, []
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i:i + 2])
                i += 2
                continue
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unquote(value: str) -> str:
    """A value in double quotes (to protect commas): the quotes go, ``\\"`` becomes ``"``; backslashes
    otherwise stay as typed, so regular expressions need no double escaping."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


@dataclass
class FieldSpec:
    """One ``--field``: where it goes, its schema, whether it is required."""

    path: list[str]
    schema: dict[str, Any]
    required: bool = False


def parse_field(text: str) -> FieldSpec:
    """``PATH:TYPE[:CONSTRAINT,...]``; PATH is dotted, ``[]`` after a segment walks into list items."""
    where = f"--field {text}"
    head, sep, rest = text.partition(":")
    if not sep or not head:
        raise UsageError(f"{where}: expected PATH:TYPE[:CONSTRAINT,...], e.g. spec.replicas:integer:minimum=1")
    type_text, _, constraints = rest.partition(":")
    path = head.split(".")
    if any(not re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*(\[\])?", p) for p in path):
        raise UsageError(f"{where}: invalid path {head!r} (dotted field names; 'name[]' for list items)")
    if path[0] in RESERVED_ROOT:
        raise UsageError(f"{where}: {path[0]} is defined by Kubernetes, not by the CRD")
    schema = type_schema(type_text or "string", where)
    required = False
    for item in split_top(constraints, ",") if constraints else []:
        name, eq, value = item.partition("=")
        if markers.apply_constraint(schema, name.strip(), unquote(value) if eq else None, where):
            required = True
    return FieldSpec(path, schema, required)


def _node_for(root: dict[str, Any], path: list[str], where: str) -> tuple[dict[str, Any], str]:
    """The parent object schema of the last segment of ``path`` (created as needed) and its name."""
    node = root
    for seg in path[:-1]:
        name, is_list = (seg[:-2], True) if seg.endswith("[]") else (seg, False)
        props = node.setdefault("properties", {})
        node.setdefault("type", "object")
        child = props.setdefault(name, {"type": "array", "items": {"type": "object"}} if is_list
                                 else {"type": "object"})
        if is_list:
            if child.get("type") != "array":
                raise UsageError(f"{where}: {name} is not a list")
            child = child.setdefault("items", {"type": "object"})
        if child.get("type") != "object":
            raise UsageError(f"{where}: {name} is a {child.get('type', 'schemaless field')}, it cannot have fields")
        node = child
    last = path[-1]
    if last.endswith("[]"):
        raise UsageError(f"{where}: the last segment names the field itself; use a []T type for a list")
    return node, last


def from_fields(specs: list[str]) -> dict[str, Any]:
    """The object's top-level properties (``spec``, ``status``, ...) built from ``--field`` specs."""
    root: dict[str, Any] = {"type": "object", "properties": {}}
    for text in specs:
        f = parse_field(text)
        parent, name = _node_for(root, f.path, f"--field {text}")
        props = parent.setdefault("properties", {})
        if name in props and props[name].get("properties"):
            existing = props[name]
            if f.schema.get("type") != "object":
                raise UsageError(f"--field {text}: {name} already has fields, so it must be an object")
            existing.update({k: v for k, v in f.schema.items() if k != "properties"})
        else:
            props[name] = f.schema
        if f.required:
            req = parent.setdefault("required", [])
            if name not in req:
                req.append(name)
    return root


# --- from Python types ---------------------------------------------------------------------


def import_object(ref: str) -> Any:
    """``module:Class`` (or ``path/to/file.py:Class``), imported with the current directory on sys.path."""
    import importlib
    import importlib.util
    import os
    import sys

    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--from-model {ref}: expected module:Class (e.g. myop.api:CronTab)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(
                os.path.splitext(os.path.basename(module_name))[0], module_name)
            if spec is None or spec.loader is None or not os.path.exists(module_name):
                raise UsageError(f"--from-model {ref}: no such file {module_name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except ImportError as e:
        raise UsageError(f"--from-model {ref}: cannot import {module_name}: {e}",
                         hint="run from the directory that holds the module, or set PYTHONPATH") from None
    except (Exception, SystemExit) as e:  # user code failing (or exiting) at import time: say so, no traceback
        raise K8sxError(f"--from-model {ref}: importing {module_name} failed: {type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"--from-model {ref}: {module_name} has no attribute {attr!r}") from None
    return obj


def json_schema_of(cls: Any) -> dict[str, Any]:
    """pydantic's JSON schema of a pydantic model, a dataclass or any type pydantic understands."""
    import pydantic

    try:
        return pydantic.TypeAdapter(cls).json_schema(mode="validation")
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as e:
        first = str(e).splitlines()[0]
        raise K8sxError(f"{getattr(cls, '__name__', cls)} cannot be turned into a schema: {first}") from None


def from_model(cls: Any) -> dict[str, Any]:
    """The object's top-level properties from a model: its fields are spec/status/... if it has a
    ``spec`` field, else the model is the spec."""
    structural = translate(json_schema_of(cls))
    props = structural.get("properties") or {}
    if "spec" in props:
        root = {"type": "object", "properties": {k: v for k, v in props.items() if k not in RESERVED_ROOT}}
        req = [r for r in structural.get("required", []) if r not in RESERVED_ROOT]
        if req:
            root["required"] = req
        if "x-kubernetes-validations" in structural:
            root["x-kubernetes-validations"] = structural["x-kubernetes-validations"]
        return root
    return {"type": "object", "properties": {"spec": structural}}


_DROP = {"title", "$schema", "$id", "examples", "deprecated", "readOnly", "writeOnly", "discriminator",
         "$comment", "contentMediaType", "contentEncoding"}


def translate(js: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema 2020-12 (pydantic's) -> structural OpenAPI v3.0 (what apiextensions v1 accepts)."""
    defs = js.get("$defs") or {}
    return _translate(js, defs, "", ())


def _resolve(node: dict[str, Any], defs: dict[str, Any], stack: tuple[str, ...], where: str) -> dict[str, Any]:
    ref = node["$ref"]
    name = ref.rsplit("/", 1)[-1]
    if not ref.startswith("#/$defs/") or name not in defs:
        raise K8sxError(f"{where or '<root>'}: cannot inline $ref {ref}")
    if name in stack:
        raise K8sxError(f"{where or '<root>'}: {name} refers to itself; a recursive type has no structural "
                        "schema (mark the field with PreserveUnknownFields() instead)")
    merged = dict(defs[name])
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    merged["$k8sx-def"] = name
    return merged


def _translate(node: Any, defs: dict[str, Any], where: str, stack: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise K8sxError(f"{where or '<root>'}: unexpected schema {node!r}")
    if "$ref" in node:
        node = _resolve(node, defs, stack, where)
    if "$k8sx-def" in node:
        stack = (*stack, node.pop("$k8sx-def"))
    node = dict(node)
    node.pop("$defs", None)
    # allOf with one member: pydantic's old way to attach a description to a $ref
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_translate(inner, defs, where, stack), **node}
    out: dict[str, Any] = {}
    nullable = False
    for junctor in ("anyOf", "oneOf"):
        if junctor in node:
            all_branches = node.pop(junctor)
            branches = [b for b in all_branches if b != {"type": "null"}]
            nullable = nullable or len(branches) < len(all_branches)
            tr = [_translate(b, defs, where, stack) for b in branches]
            types = sorted({b.get("type", "") for b in tr})
            if len(tr) == 1:
                out.update(tr[0])
            elif types == ["integer", "string"]:
                out.update(_copy(markers.INT_OR_STRING))
            elif len(types) == 1 and types[0] and all(set(b) <= {"type", "enum", "format"} for b in tr):
                out["type"] = types[0]  # e.g. Literal["a"] | Literal["b"]
                enums = [v for b in tr for v in b.get("enum", [])]
                if enums:
                    out["enum"] = enums
            else:
                raise K8sxError(f"{where or '<root>'}: a union of {' and '.join(t or 'untyped' for t in types)} "
                                "has no structural schema; use one type, or a field with PreserveUnknownFields()")
    for key, value in node.items():
        if key in _DROP or key.startswith("$k8sx"):
            continue
        if key == "type":
            if isinstance(value, list):  # ["string", "null"]
                rest = [t for t in value if t != "null"]
                nullable = nullable or len(rest) < len(value)
                if len(rest) != 1:
                    raise K8sxError(f"{where or '<root>'}: type {value} has no structural schema")
                value = rest[0]
            if value == "null":
                raise K8sxError(f"{where or '<root>'}: a field that can only be null has no schema")
            out["type"] = value
        elif key == "default":
            if value is not None:
                out["default"] = value
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "uniqueItems":
            if value:
                out.setdefault("x-kubernetes-list-type", "set")
        elif key == "properties":
            out["properties"] = {k: _translate(v, defs, f"{where}.{k}" if where else k, stack)
                                 for k, v in value.items()}
        elif key == "items":
            if isinstance(value, dict):
                out["items"] = _translate(value, defs, f"{where}[]", stack)
        elif key == "prefixItems":
            raise K8sxError(f"{where or '<root>'}: tuples have no structural schema; use a list or a model")
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out["additionalProperties"] = _translate(value, defs, f"{where}.*", stack)
            # False (extra="forbid"): the API server prunes unknown fields anyway; not expressible here
        elif key in ("anyOf", "oneOf", "allOf", "not", "patternProperties", "dependentSchemas",
                     "propertyNames", "unevaluatedProperties", "if", "then", "else"):
            raise K8sxError(f"{where or '<root>'}: {key} is not supported in a structural schema")
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        del out["additionalProperties"]
    if nullable:
        out["nullable"] = True
    if not out.get("type") and not out.get("x-kubernetes-int-or-string") \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        if out.get("enum") is not None:
            out["type"] = _json_type(out["enum"][0]) if out["enum"] else "string"
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True  # Any: no schema below this field
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


# --- from samples ----------------------------------------------------------------------------


@dataclass
class Inferred:
    """What a sample object tells: its group, version, kind and the schema of its other fields."""

    group: str
    version: str
    kind: str
    root: dict[str, Any]
    notes: list[str]


def infer_value(value: Any, where: str, notes: list[str]) -> dict[str, Any]:
    """The schema of one sample value."""
    if value is None:
        notes.append(f"{where}: null in the sample, type unknown: kept schemaless (preserve-unknown-fields)")
        return {"nullable": True, "x-kubernetes-preserve-unknown-fields": True}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        if not value:
            notes.append(f"{where}: empty list in the sample, item type unknown: items kept schemaless")
            return {"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": True}}
        items = infer_value(value[0], f"{where}[0]", notes)
        for i, v in enumerate(value[1:], 1):
            items = merge(items, infer_value(v, f"{where}[{i}]", notes), f"{where}[]")
        return {"type": "array", "items": items}
    if isinstance(value, dict):
        if not value:
            notes.append(f"{where}: empty object in the sample: kept open (preserve-unknown-fields)")
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "properties": {str(k): infer_value(v, f"{where}.{k}", notes)
                                                 for k, v in value.items()}}
    return {"type": "string"}  # dates and other YAML scalars are strings in JSON


def merge(a: dict[str, Any], b: dict[str, Any], where: str) -> dict[str, Any]:
    """One schema that admits what ``a`` and ``b`` admit (two samples of the same field)."""
    if a == b:
        return a
    if a.get("x-kubernetes-preserve-unknown-fields") and "type" not in a:
        return {**b, "nullable": True} if a.get("nullable") else a
    if b.get("x-kubernetes-preserve-unknown-fields") and "type" not in b:
        return merge(b, a, where)
    ta, tb = a.get("type"), b.get("type")
    if {ta, tb} == {"integer", "number"}:
        return {"type": "number"}
    if {ta, tb} == {"integer", "string"} or (a.get("x-kubernetes-int-or-string") and tb in ("integer", "string")):
        return _copy(markers.INT_OR_STRING)
    if b.get("x-kubernetes-int-or-string") and ta in ("integer", "string"):
        return _copy(markers.INT_OR_STRING)
    if ta != tb:
        raise K8sxError(f"{where}: the samples disagree ({ta} and {tb}); a field needs one type")
    if ta == "array":
        return {"type": "array", "items": merge(a["items"], b["items"], f"{where}[]")}
    if ta == "object":
        if a.get("x-kubernetes-preserve-unknown-fields") or b.get("x-kubernetes-preserve-unknown-fields"):
            props = {**a.get("properties", {}), **b.get("properties", {})}
            out: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            if props:
                out["properties"] = props
            return out
        pa, pb = a.get("properties", {}), b.get("properties", {})
        props = {k: merge(pa[k], pb[k], f"{where}.{k}") if k in pa and k in pb else (pa.get(k) or pb[k])
                 for k in {**pa, **pb}}
        return {"type": "object", "properties": props}
    return a


def from_samples(samples: list[tuple[dict[str, Any], str]]) -> Inferred:
    """Schema and identity from sample custom objects (all of one kind), given as (object, where)."""
    if not samples:
        raise UsageError("--from-sample: the file holds no object")
    notes: list[str] = []
    first, where0 = samples[0]
    group, version, kind = _identity(first, where0)
    root: dict[str, Any] | None = None
    for obj, where in samples:
        if _identity(obj, where) != (group, version, kind):
            raise UsageError(f"{where}: {obj.get('apiVersion')}/{obj.get('kind')} differs from the first sample's "
                             f"{group}/{version}/{kind}; one CRD per kind")
        body = {k: v for k, v in obj.items() if k not in RESERVED_ROOT}
        schema = infer_value(body, "", notes) if body else {"type": "object", "properties": {}}
        schema.pop("x-kubernetes-preserve-unknown-fields", None)
        schema.setdefault("properties", {})
        root = schema if root is None else merge(root, schema, "")
    assert root is not None
    return Inferred(group, version, kind, root, [n.lstrip(".") for n in notes])


def _identity(obj: Any, where: str) -> tuple[str, str, str]:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: a sample must be an object with apiVersion and kind")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or "/" not in api_version:
        raise UsageError(f"{where}: the sample needs apiVersion GROUP/VERSION (a custom resource's group has a dot)")
    if not isinstance(kind, str) or not kind:
        raise UsageError(f"{where}: the sample needs a kind")
    group, _, version = api_version.partition("/")
    return group, version, kind


def pluralize(kind: str) -> str:
    """English plural of the lower-cased kind, as kubebuilder guesses it (``Policy`` -> ``policies``)."""
    word = kind.lower()
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"
