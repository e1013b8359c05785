"""apiextensions.k8s.io/v1beta1 -> v1 for CRDs, following the deprecation guide's table.

Clusters stopped serving v1beta1 CRDs in 1.22, yet old manifests (and the classic CronTab example
with ``version: v1`` and no schema) are still around. The server used to default much of v1beta1
(scope, versions from ``version``, singular, listKind, ``preserveUnknownFields: true``); v1 requires
these, and a structural schema. Conversion writes each default out, moves the top-level
validation/subresources/columns into every version, keeps v1beta1's no-pruning behaviour with a root
``x-kubernetes-preserve-unknown-fields: true`` (with a warning), repairs missing ``type``s where
they can be inferred, and lists what needs a human. Other documents pass through, except v1 CRDs
still carrying ``preserveUnknownFields: true`` (as clusters serve CRDs that were created as
v1beta1), which get the same root ``x-kubernetes-preserve-unknown-fields`` fix.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from k8sx.crd.cluster import SERVER_OWNED_METADATA
from k8sx.crd.documents import Document, Path


@dataclass
class Note:
    """Something the converter did (``warning``) or could not do (``human``), with where it was."""

    kind: str
    path: Path
    message: str
    where: str = ""

    def __str__(self) -> str:
        label = "warning" if self.kind == "warning" else "needs a human"
        dotted = ".".join(str(p) for p in self.path) or "<document>"
        return f"{self.where}: {label}: {dotted}: {self.message}"


@dataclass
class Result:
    docs: list[Any] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    converted: int = 0


def _is_crd(data: Any, api_version: str) -> bool:
    return isinstance(data, dict) and data.get("kind") == "CustomResourceDefinition" \
        and data.get("apiVersion") == api_version


def convert_documents(docs: list[Document]) -> Result:
    """Convert every v1beta1 CRD of ``docs``, and v1 CRDs that still carry ``preserveUnknownFields:
    true`` (served as v1 by a cluster that once had them as v1beta1); other documents are kept."""
    result = Result()
    for doc in docs:
        data = doc.data
        fixable_v1 = _is_crd(data, "apiextensions.k8s.io/v1") and isinstance(data.get("spec"), dict) \
            and data["spec"].get("preserveUnknownFields") is True
        if _is_crd(data, "apiextensions.k8s.io/v1beta1") or fixable_v1:
            try:
                out, notes = fix_v1(data) if fixable_v1 else convert(data)
            except (AttributeError, TypeError, ValueError, KeyError) as e:
                # a field of the wrong type (a string where a mapping belongs...): left as it was
                note = Note("human", (), f"not converted: the document is not a well-formed v1beta1 CRD "
                                         f"({type(e).__name__}: {e})")
                note.where = doc.where(())
                result.docs.append(data)
                result.notes.append(note)
                continue
            for n in notes:
                n.where = doc.where(n.path)
            result.docs.append(out)
            result.notes.extend(notes)
            result.converted += 1
        else:
            result.docs.append(data)
    return result


def convert(crd: dict[str, Any]) -> tuple[dict[str, Any], list[Note]]:
    """One v1beta1 CRD as v1, and the notes (paths point into the v1beta1 input)."""
    notes: list[Note] = []
    old = copy.deepcopy(crd)
    spec = old.get("spec") or {}
    names = dict(spec.get("names") or {})
    kind = names.get("kind") or ""
    if kind:
        names.setdefault("singular", kind.lower())
        names.setdefault("listKind", f"{kind}List")
    new_names = {k: names[k] for k in ("kind", "listKind", "plural", "singular", "shortNames", "categories")
                 if k in names}
    new_names.update({k: v for k, v in names.items() if k not in new_names})

    preserve = spec.get("preserveUnknownFields", True)  # v1beta1's default (defaults.go)
    top_schema = (spec.get("validation") or {}).get("openAPIV3Schema")
    top_sub = spec.get("subresources")
    top_cols = spec.get("additionalPrinterColumns")

    versions_in = spec.get("versions")
    if not versions_in:
        name = spec.get("version")
        if not name:
            notes.append(Note("human", ("spec",), "neither spec.version nor spec.versions: no version to serve"))
            versions_in = []
        else:
            versions_in = [{"name": name, "served": True, "storage": True}]
    elif spec.get("version") and spec["version"] != versions_in[0].get("name"):
        notes.append(Note("human", ("spec", "version"), f"spec.version {spec['version']} is not the first of "
                                                        "spec.versions (v1beta1 required that)"))

    versions = []
    for i, v in enumerate(versions_in):
        vpath: Path = ("spec", "versions", i) if spec.get("versions") else ("spec", "version")
        nv: dict[str, Any] = {"name": v.get("name"), "served": v.get("served", True),
                              "storage": v.get("storage", False)}
        for key in ("deprecated", "deprecationWarning"):
            if key in v:
                nv[key] = v[key]
        cols = v.get("additionalPrinterColumns", top_cols)
        if cols:
            nv["additionalPrinterColumns"] = [_column(c) for c in cols]
        schema_src = (v.get("schema") or {}).get("openAPIV3Schema", top_schema)
        spath: Path = ((*vpath, "schema", "openAPIV3Schema") if (v.get("schema") or {}).get("openAPIV3Schema")
                       else ("spec", "validation", "openAPIV3Schema"))
        if schema_src is None:
            schema = {"type": "object"}
            if preserve is not False:
                notes.append(Note("warning", vpath if not spec.get("versions") else ("spec",),
                                  f"version {nv['name']} had no schema, and v1beta1 kept unknown fields by "
                                  "default (preserveUnknownFields: true); v1 requires a schema: wrote type: "
                                  "object with x-kubernetes-preserve-unknown-fields: true so nothing is pruned "
                                  "(nothing is validated either: write a real schema)"))
        else:
            schema = _repair(copy.deepcopy(schema_src), spath, notes, root=True)
        if preserve is not False and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["x-kubernetes-preserve-unknown-fields"] = True
            if schema_src is not None:
                notes.append(Note("warning", ("spec",),
                                  "v1beta1 defaulted preserveUnknownFields to true (unknown fields kept); "
                                  "kept with a root x-kubernetes-preserve-unknown-fields: true. Drop it to "
                                  "have the server prune fields the schema does not name"))
        elif preserve is False and schema_src is None:
            notes.append(Note("human", ("spec",), f"version {nv['name']}: preserveUnknownFields is false but there "
                                                  "is no schema; every field would be pruned: write a schema"))
            schema["x-kubernetes-preserve-unknown-fields"] = True
        nv["schema"] = {"openAPIV3Schema": schema}
        sub = v.get("subresources", top_sub)
        if sub:
            nv["subresources"] = copy.deepcopy(sub)
        versions.append(nv)
    if versions and sum(1 for v in versions if v["storage"]) != 1:
        notes.append(Note("human", ("spec", "versions"), "exactly one version must have storage: true"))

    new_spec: dict[str, Any] = {}
    conv = _conversion(spec, notes)
    if conv:
        new_spec["conversion"] = conv
    new_spec["group"] = spec.get("group")
    new_spec["names"] = new_names
    if "scope" not in spec:
        notes.append(Note("warning", ("spec",), "scope was not set (v1beta1 defaulted it): wrote Namespaced"))
    new_spec["scope"] = spec.get("scope", "Namespaced")
    new_spec["versions"] = versions
    known = {"group", "names", "scope", "version", "versions", "validation", "subresources",
             "additionalPrinterColumns", "conversion", "preserveUnknownFields"}
    for key in spec:
        if key not in known:
            notes.append(Note("human", ("spec", key), f"unknown v1beta1 field {key}, left out"))
    metadata = {k: v for k, v in (old.get("metadata") or {}).items() if k not in SERVER_OWNED_METADATA}
    return ({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
             "metadata": metadata, "spec": new_spec}, notes)


def fix_v1(crd: dict[str, Any]) -> tuple[dict[str, Any], list[Note]]:
    """A v1 CRD with ``spec.preserveUnknownFields: true`` (what a cluster serves for a CRD created as
    v1beta1): the field goes, each version's schema keeps unknown fields at its root instead."""
    out = copy.deepcopy(crd)
    spec = out["spec"]
    del spec["preserveUnknownFields"]
    notes = [Note("warning", ("spec", "preserveUnknownFields"),
                  "preserveUnknownFields: true cannot be set in v1 (updates keep it, new CRDs may not): "
                  "replaced by a root x-kubernetes-preserve-unknown-fields: true in each version's schema")]
    for v in spec.get("versions") or []:
        schema = v.setdefault("schema", {}).setdefault("openAPIV3Schema", {"type": "object"})
        schema["x-kubernetes-preserve-unknown-fields"] = True
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)
    return out, notes


def _column(col: dict[str, Any]) -> dict[str, Any]:
    """A printer column: ``JSONPath`` (v1beta1's json tag) becomes ``jsonPath``."""
    out = {k: v for k, v in col.items() if k != "JSONPath"}
    if "JSONPath" in col:
        out["jsonPath"] = col["JSONPath"]
    return out


def _conversion(spec: dict[str, Any], notes: list[Note]) -> dict[str, Any] | None:
    conv = spec.get("conversion")
    if not conv:
        return None
    strategy = conv.get("strategy", "None")
    if strategy != "Webhook":
        return {"strategy": strategy}
    out: dict[str, Any] = {"strategy": "Webhook", "webhook": {}}
    if "webhookClientConfig" in conv:
        out["webhook"]["clientConfig"] = conv["webhookClientConfig"]
    else:
        notes.append(Note("human", ("spec", "conversion"), "strategy Webhook without webhookClientConfig"))
    out["webhook"]["conversionReviewVersions"] = conv.get("conversionReviewVersions") or ["v1beta1"]
    if "conversionReviewVersions" not in conv:
        notes.append(Note("warning", ("spec", "conversion"), "conversionReviewVersions defaulted to [v1beta1] "
                                                             "as v1beta1 did; check what the webhook speaks"))
    return out


_TYPE_HINTS = (("properties", "object"), ("additionalProperties", "object"), ("items", "array"),
               ("minItems", "array"), ("maxItems", "array"), ("minLength", "string"), ("maxLength", "string"),
               ("pattern", "string"), ("minProperties", "object"), ("maxProperties", "object"))


def _repair(s: Any, path: Path, notes: list[Note], root: bool = False, level: str = "field") -> Any:
    """Make a v1beta1 schema structural where that is unambiguous; note what is not."""
    if not isinstance(s, dict):
        return s
    if "type" not in s and not s.get("x-kubernetes-int-or-string") \
            and not s.get("x-kubernetes-preserve-unknown-fields"):
        inferred = "object" if root else next((t for k, t in _TYPE_HINTS if k in s), None)
        if inferred is None and s.get("enum"):
            values = s["enum"]
            kinds = {type(v).__name__ for v in values}
            inferred = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}.get(
                kinds.pop()) if len(kinds) == 1 else None
        if inferred:
            s["type"] = inferred
            notes.append(Note("warning", path, f"no type: inferred type: {inferred}"))
        else:
            notes.append(Note("human", path, f"no type and nothing to infer it from ({level}); a structural "
                                             "schema needs one (or x-kubernetes-preserve-unknown-fields: true)"))
    if s.get("uniqueItems") is True:
        del s["uniqueItems"]
        items = s.get("items") if isinstance(s.get("items"), dict) else {}
        if items.get("type") in ("string", "integer", "number", "boolean"):
            s["x-kubernetes-list-type"] = "set"
            notes.append(Note("warning", path, "uniqueItems: true is forbidden in v1: replaced by "
                                               "x-kubernetes-list-type: set"))
        else:
            notes.append(Note("human", path, "uniqueItems: true is forbidden in v1 and the items are not "
                                             "scalars: removed; consider x-kubernetes-list-type: map"))
    for key in ("$ref", "definitions", "patternProperties", "dependencies", "additionalItems", "id"):
        if key in s:
            notes.append(Note("human", (*path, key), f"{key} is not supported by v1 structural schemas; "
                                                     "rewrite this part of the schema"))
    for name, child in list((s.get("properties") or {}).items()):
        s["properties"][name] = _repair(child, (*path, "properties", name), notes)
    if isinstance(s.get("items"), dict):
        s["items"] = _repair(s["items"], (*path, "items"), notes, level="items")
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _repair(s["additionalProperties"], (*path, "additionalProperties"), notes)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, b in enumerate(s.get(junctor) or []):
            if isinstance(b, dict) and "type" in b and not s.get("x-kubernetes-int-or-string"):
                notes.append(Note("human", (*path, junctor, i), f"type inside {junctor} is not structural; "
                                                                "move the type out of the junctor"))
    return s
