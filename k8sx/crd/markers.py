"""controller-gen's markers, the Python way: one vocabulary for ``--field`` constraints and ``Annotated``.

Go projects steer CRD schemas with ``+kubebuilder:validation:...`` comments. k8sx has two entries
for the same knobs and both end here, so a marker means the same thing whichever way it came in:

* ``--field spec.replicas:integer:minimum=1,maximum=10`` -- :func:`apply_constraint` by name
  (the names follow controller-gen's, in camelCase; ``CONSTRAINTS`` lists them with the marker);
* ``Annotated[int, Field(ge=1)]`` in a pydantic model or dataclass -- pydantic's own constraints, plus
  the classes below for what pydantic has no word for (list/map types, CEL rules, int-or-string,
  preserve-unknown-fields, embedded resources). They hook into pydantic's JSON-schema generation,
  so this module never imports pydantic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from k8sx.errors import UsageError

# name -> (controller-gen marker it stands for, how the value is read, help)
CONSTRAINTS: dict[str, tuple[str, str, str]] = {
    "required": ("+kubebuilder:validation:Required", "flag", "the field must be present"),
    "optional": ("+kubebuilder:validation:Optional", "flag", "the field may be absent (the default)"),
    "minimum": ("+kubebuilder:validation:Minimum", "number", "inclusive lower bound (alias min, ge)"),
    "maximum": ("+kubebuilder:validation:Maximum", "number", "inclusive upper bound (alias max, le)"),
    "exclusiveMinimum": ("+kubebuilder:validation:ExclusiveMinimum", "number",
                         "exclusive lower bound (alias gt): minimum + exclusiveMinimum: true"),
    "exclusiveMaximum": ("+kubebuilder:validation:ExclusiveMaximum", "number",
                         "exclusive upper bound (alias lt): maximum + exclusiveMaximum: true"),
    "multipleOf": ("+kubebuilder:validation:MultipleOf", "number", "the value is a multiple of this"),
    "minLength": ("+kubebuilder:validation:MinLength", "int", "shortest string"),
    "maxLength": ("+kubebuilder:validation:MaxLength", "int", "longest string"),
    "pattern": ("+kubebuilder:validation:Pattern", "str", "RE2 regular expression the string matches"),
    "format": ("+kubebuilder:validation:Format", "str", "OpenAPI format (date-time, int32, byte, ...)"),
    "enum": ("+kubebuilder:validation:Enum", "list", "allowed values, a|b|c or a JSON list"),
    "minItems": ("+kubebuilder:validation:MinItems", "int", "fewest list items"),
    "maxItems": ("+kubebuilder:validation:MaxItems", "int", "most list items"),
    "minProperties": ("+kubebuilder:validation:MinProperties", "int", "fewest map entries"),
    "maxProperties": ("+kubebuilder:validation:MaxProperties", "int", "most map entries"),
    "default": ("+kubebuilder:default", "json", "default value (JSON or YAML)"),
    "nullable": ("+nullable", "flag", "null is allowed"),
    "description": ("(Go doc comment)", "str", "the field's description (alias desc)"),
    "rule": ("+kubebuilder:validation:XValidation:rule=", "str",
             "a CEL rule on this field (see --rule for message, reason, fieldPath, ...)"),
    "listType": ("+listType", "str", "atomic, set or map"),
    "listMapKey": ("+listMapKey", "list", "key fields of a map-list, a|b"),
    "mapType": ("+mapType", "str", "atomic or granular"),
    "structType": ("+structType", "str", "atomic or granular (emitted as x-kubernetes-map-type)"),
    "preserveUnknownFields": ("+kubebuilder:pruning:PreserveUnknownFields", "flag",
                              "keep fields the schema does not name (alias preserve)"),
    "schemaless": ("+kubebuilder:validation:Schemaless", "flag", "no schema below this field"),
    "embeddedResource": ("+kubebuilder:validation:EmbeddedResource", "flag",
                         "a whole Kubernetes object (apiVersion, kind, metadata) (alias embedded)"),
    "intOrString": ("+kubebuilder:validation:XIntOrString", "flag", "an integer or a string"),
    "exactlyOneOf": ("+kubebuilder:validation:ExactlyOneOf", "list", "of these fields, a|b, exactly one is set"),
    "atMostOneOf": ("+kubebuilder:validation:AtMostOneOf", "list", "of these fields, a|b, at most one is set"),
    "atLeastOneOf": ("+kubebuilder:validation:AtLeastOneOf", "list", "of these fields, a|b, at least one is set"),
}

# union markers -> (CEL comparison of the number of fields set, message)
UNIONS = {"exactlyOneOf": ("== 1", "exactly one of the fields in [{}] must be set"),
          "atMostOneOf": ("<= 1", "at most one of the fields in [{}] may be set"),
          "atLeastOneOf": (">= 1", "at least one of the fields in [{}] must be set")}


def union_rule(kind: str, fields: list[str]) -> dict[str, Any]:
    """The CEL rule a union marker stands for (as controller-gen writes it for the Go markers)."""
    op, message = UNIONS[kind]
    bad = [f for f in fields if not f.isidentifier()]
    if len(fields) < 2 or bad:
        raise UsageError(f"{kind}: needs two or more field names, a|b (not {'|'.join(fields)})")
    has = ", ".join(f"has(self.{f})" for f in fields)
    return {"message": message.format(" ".join(fields)), "rule": f"[{has}].filter(x, x).size() {op}"}

ALIASES = {"min": "minimum", "ge": "minimum", "max": "maximum", "le": "maximum", "gt": "exclusiveMinimum",
           "lt": "exclusiveMaximum", "desc": "description", "preserve": "preserveUnknownFields",
           "embedded": "embeddedResource", "uniqueItems": "uniqueItems"}

CEL_REASONS = ("FieldValueRequired", "FieldValueForbidden", "FieldValueInvalid", "FieldValueDuplicate")


def parse_scalar(text: str) -> Any:
    """A value from the command line: JSON if it parses (``"a,b"``, ``[1,2]``, ``3``), else YAML, else text."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _number(name: str, text: str) -> int | float:
    value = parse_scalar(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name}={text}: not a number")
    return value


def apply_constraint(schema: dict[str, Any], name: str, value: str | None, where: str) -> bool:
    """Apply the constraint ``name[=value]`` to ``schema``; returns True for ``required``.

    ``where`` names the flag in error messages (``--field spec.size``).
    """
    key = ALIASES.get(name, name)
    if key == "uniqueItems":
        raise UsageError(f"{where}: uniqueItems is forbidden by the API server (quadratic cost); "
                         "use listType=set")
    if key not in CONSTRAINTS:
        raise UsageError(f"{where}: unknown constraint {name!r}",
                         hint="known: " + ", ".join(sorted(CONSTRAINTS)))
    kind = CONSTRAINTS[key][1]
    if kind == "flag":
        if value not in (None, "true"):
            raise UsageError(f"{where}: {name} takes no value")
    elif value is None:
        raise UsageError(f"{where}: {name} needs a value ({name}=...)")
    if key == "required":
        return True
    if key == "optional":
        return False
    if key in ("minimum", "maximum", "multipleOf"):
        schema[key] = _number(name, value or "")
    elif key in ("exclusiveMinimum", "exclusiveMaximum"):
        schema["minimum" if key == "exclusiveMinimum" else "maximum"] = _number(name, value or "")
        schema[key] = True
    elif kind == "int":
        n = _number(name, value or "")
        if not isinstance(n, int) or n < 0:
            raise UsageError(f"{where}: {name} must be a non-negative integer")
        schema[key] = n
    elif key == "enum":
        schema["enum"] = _list(value or "", schema.get("type"))
    elif key in UNIONS:
        rule = union_rule(key, [str(v) for v in _list(value or "", "string")])
        schema.setdefault("x-kubernetes-validations", []).append(rule)
    elif key == "listMapKey":
        schema["x-kubernetes-list-map-keys"] = [str(v) for v in _list(value or "", "string")]
        schema.setdefault("x-kubernetes-list-type", "map")
    elif key == "default":
        schema["default"] = parse_scalar(value or "")
    elif key == "nullable":
        schema["nullable"] = True
    elif key == "rule":
        schema.setdefault("x-kubernetes-validations", []).append({"rule": value})
    elif key == "listType":
        schema["x-kubernetes-list-type"] = value
    elif key in ("mapType", "structType"):
        schema["x-kubernetes-map-type"] = value
    elif key == "preserveUnknownFields":
        schema["x-kubernetes-preserve-unknown-fields"] = True
    elif key == "schemaless":
        for k in [k for k in schema if k != "description"]:
            del schema[k]
        schema["x-kubernetes-preserve-unknown-fields"] = True
    elif key == "embeddedResource":
        schema["type"] = "object"
        schema["x-kubernetes-embedded-resource"] = True
        schema["x-kubernetes-preserve-unknown-fields"] = True
    elif key == "intOrString":
        schema.pop("type", None)
        schema.update(INT_OR_STRING)
    else:  # pattern, format, description
        schema[key] = value
    return False


def _list(text: str, typ: str | None) -> list[Any]:
    """``a|b|c`` or a JSON list; items read as numbers/booleans for such types, else kept as text."""
    if text.startswith("["):
        value = parse_scalar(text)
        if not isinstance(value, list):
            raise UsageError(f"not a list: {text}")
        return value
    items = text.split("|")
    if typ in ("integer", "number", "boolean"):
        return [parse_scalar(i) for i in items]
    return items


INT_OR_STRING: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                 "x-kubernetes-int-or-string": True}


# --- Annotated markers (pydantic models and dataclasses) ---------------------------------------


class _Marker:
    """Base: ``schema()`` is merged into the field's JSON schema by pydantic (through the hook below)."""

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        out = dict(handler(core_schema))
        for key, value in self.schema().items():
            if key == "x-kubernetes-validations":
                out[key] = [*out.get(key, []), *value]
            else:
                out[key] = value
        return out

    def __hash__(self) -> int:  # pydantic hashes metadata of Annotated types
        return hash(json.dumps(self.schema(), sort_keys=True))


@dataclass(frozen=True, eq=False)
class ListType(_Marker):
    """``+listType`` (and ``+listMapKey``): ``ListType("map", "name")``, ``ListType("set")``."""

    kind: str
    keys: tuple[str, ...] = ()

    def __init__(self, kind: str, *keys: str) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "keys", tuple(keys))

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"x-kubernetes-list-type": self.kind}
        if self.keys:
            out["x-kubernetes-list-map-keys"] = list(self.keys)
        return out


@dataclass(frozen=True, eq=False)
class MapType(_Marker):
    """``+mapType`` / ``+structType``: ``MapType("atomic")``."""

    kind: str

    def schema(self) -> dict[str, Any]:
        return {"x-kubernetes-map-type": self.kind}


@dataclass(frozen=True, eq=False)
class XValidation(_Marker):
    """``+kubebuilder:validation:XValidation``: a CEL rule with its message and options."""

    rule: str
    message: str | None = None
    message_expression: str | None = None
    reason: str | None = None
    field_path: str | None = None
    optional_old_self: bool | None = None

    def schema(self) -> dict[str, Any]:
        return {"x-kubernetes-validations": [cel_rule(self.rule, self.message, self.message_expression,
                                                      self.reason, self.field_path, self.optional_old_self)]}


class _Union(_Marker):
    kind = ""

    def __init__(self, *fields: str) -> None:
        self.fields = list(fields)
        union_rule(self.kind, self.fields)  # checked when the model is defined

    def schema(self) -> dict[str, Any]:
        return {"x-kubernetes-validations": [union_rule(self.kind, self.fields)]}


class ExactlyOneOf(_Union):
    """``+kubebuilder:validation:ExactlyOneOf``: on a field whose type is a model."""

    kind = "exactlyOneOf"


class AtMostOneOf(_Union):
    """``+kubebuilder:validation:AtMostOneOf``."""

    kind = "atMostOneOf"


class AtLeastOneOf(_Union):
    """``+kubebuilder:validation:AtLeastOneOf``."""

    kind = "atLeastOneOf"


@dataclass(frozen=True, eq=False)
class Schema(_Marker):
    """Any other schema keywords, verbatim: ``Schema({"format": "date-time"})``."""

    keywords: dict[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        return dict(self.keywords)


class PreserveUnknownFields(_Marker):
    """``+kubebuilder:pruning:PreserveUnknownFields``."""

    def schema(self) -> dict[str, Any]:
        return {"x-kubernetes-preserve-unknown-fields": True}


class EmbeddedResource(_Marker):
    """``+kubebuilder:validation:EmbeddedResource``: a whole object (apiVersion, kind, metadata)."""

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "x-kubernetes-embedded-resource": True,
                "x-kubernetes-preserve-unknown-fields": True}


class IntOrString(_Marker):
    """``+kubebuilder:validation:XIntOrString`` (``int | str`` gets it without a marker)."""

    def schema(self) -> dict[str, Any]:
        return {"x-kubernetes-int-or-string": True}


class Nullable(_Marker):
    """``+nullable`` (``Optional[X]`` gets it without a marker)."""

    def schema(self) -> dict[str, Any]:
        return {"nullable": True}


def cel_rule(rule: str, message: str | None = None, message_expression: str | None = None,
             reason: str | None = None, field_path: str | None = None,
             optional_old_self: bool | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry, keys in the API's order, unset ones left out."""
    out: dict[str, Any] = {"rule": rule}
    for key, value in (("message", message), ("messageExpression", message_expression), ("reason", reason),
                       ("fieldPath", field_path), ("optionalOldSelf", optional_old_self)):
        if value is not None:
            out[key] = value
    return out
