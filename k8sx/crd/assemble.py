"""The CustomResourceDefinition document around a schema: names, versions, columns, subresources.

Every source (flags, a Python model, a sample) ends in the same :class:`CRDOptions` and goes
through :func:`build`, so the CRD-level knobs of controller-gen (names, scope, versions with one
storage version, deprecation, printer columns, status/scale subresources, selectable fields,
conversion, labels and annotations) behave the same whatever built the schema. Output is in
``apiextensions.k8s.io/v1`` only, with a fixed key order and sorted schema keys (as controller-gen
writes them), so regenerating an unchanged CRD gives the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from k8sx.crd.schema import pluralize, split_top, unquote
from k8sx.errors import UsageError

PRINTER_TYPES = ("integer", "number", "string", "boolean", "date")
PRINTER_FORMATS = ("int32", "int64", "float", "double", "byte", "date", "date-time", "password")


@dataclass
class Column:
    """One ``additionalPrinterColumns`` entry."""

    name: str
    type: str
    json_path: str
    description: str | None = None
    format: str | None = None
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        if self.format:
            out["format"] = self.format
        out["jsonPath"] = self.json_path
        out["name"] = self.name
        if self.priority is not None:
            out["priority"] = self.priority
        out["type"] = self.type
        return out


def parse_column(text: str) -> Column:
    """``NAME:TYPE:JSONPATH[:description=..,format=..,priority=N]`` (``+kubebuilder:printcolumn``)."""
    where = f"--column {text}"
    parts = text.split(":", 3)
    if len(parts) < 3 or not all(parts[:3]):
        raise UsageError(f"{where}: expected NAME:TYPE:JSONPATH[:format=..,priority=..,description=..]")
    col = Column(parts[0], parts[1], parts[2])
    if len(parts) == 4:
        for item in split_top(parts[3], ","):
            key, _, value = item.partition("=")
            value = unquote(value)
            if key == "format":
                col.format = value
            elif key in ("description", "desc"):
                col.description = value
            elif key == "priority":
                if not value.isdigit():
                    raise UsageError(f"{where}: priority must be a non-negative integer")
                col.priority = int(value)
            else:
                raise UsageError(f"{where}: unknown column option {key!r} (format, priority, description)")
    if col.type not in PRINTER_TYPES:
        raise UsageError(f"{where}: type must be one of {', '.join(PRINTER_TYPES)}")
    if col.format and col.format not in PRINTER_FORMATS:
        raise UsageError(f"{where}: format must be one of {', '.join(PRINTER_FORMATS)}")
    if not col.json_path.startswith("."):
        raise UsageError(f"{where}: the JSONPath must start with '.', e.g. .spec.replicas")
    return col


@dataclass
class Scale:
    """The scale subresource's paths (``+kubebuilder:subresource:scale``)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None


@dataclass
class Webhook:
    """Conversion by webhook: a service (namespace/name, path, port) or a URL."""

    service: str | None = None
    path: str | None = None
    port: int | None = None
    url: str | None = None
    ca_bundle: str | None = None
    review_versions: list[str] = field(default_factory=lambda: ["v1"])


@dataclass
class CRDOptions:
    """All CRD-level settings; ``schema`` is the object's root schema (without apiVersion/kind/metadata)."""

    group: str
    kind: str
    versions: list[str]
    schema: dict[str, Any]
    plural: str | None = None
    singular: str | None = None
    list_kind: str | None = None
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    scope: str = "Namespaced"
    storage_version: str | None = None
    unserved: list[str] = field(default_factory=list)
    deprecated: dict[str, str | None] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)
    status: bool = True
    scale: Scale | None = None
    selectable_fields: list[str] = field(default_factory=list)
    webhook: Webhook | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    max_desc_len: int | None = None
    root_validations: list[dict[str, Any]] = field(default_factory=list)
    version_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # a version's own fields


def _check(opts: CRDOptions) -> None:
    if not opts.versions:
        raise UsageError("at least one --version is needed")
    if len(set(opts.versions)) != len(opts.versions):
        raise UsageError(f"--version given twice: {', '.join(opts.versions)}")
    storage = opts.storage_version or opts.versions[0]
    if storage not in opts.versions:
        raise UsageError(f"--storage-version {storage} is not one of the versions ({', '.join(opts.versions)})")
    for name in [*opts.unserved, *opts.deprecated]:
        if name not in opts.versions:
            raise UsageError(f"version {name} (unserved/deprecated) is not one of {', '.join(opts.versions)}")
    if opts.scope not in ("Namespaced", "Cluster"):
        raise UsageError(f"--scope must be Namespaced or Cluster, not {opts.scope}")


def root_schema(opts: CRDOptions, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A version's openAPIV3Schema: apiVersion, kind, metadata plus the object's own fields (``body``,
    default the CRD's schema)."""
    body = opts.schema if body is None else body
    props: dict[str, Any] = {
        "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an "
                                      "object.", "type": "string"},
        "kind": {"description": "Kind is a string value representing the REST resource this object "
                                "represents.", "type": "string"},
        "metadata": {"type": "object"},
    }
    props.update(body.get("properties") or {})
    if opts.status and "status" not in props:
        # the controller owns status; with no declared fields it stays open rather than pruned to {}
        props["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    out: dict[str, Any] = {"type": "object", "properties": props}
    for key in ("required", "description", "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields"):
        if key in body:
            out[key] = body[key]
    if opts.root_validations:
        out["x-kubernetes-validations"] = [*out.get("x-kubernetes-validations", []), *opts.root_validations]
    return canonical(out, opts.max_desc_len)


def canonical(schema: Any, max_desc_len: int | None = None, names: bool = False) -> Any:
    """Keys sorted at every level (as controller-gen's JSON marshalling does), user values (default,
    enum, example) untouched; descriptions cut to ``max_desc_len`` (0 drops them)."""
    if isinstance(schema, list):
        return [canonical(s, max_desc_len) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key in sorted(schema):
        value = schema[key]
        if names:  # the keys of properties are field names, each value a schema
            out[key] = canonical(value, max_desc_len)
            continue
        if key == "description" and isinstance(value, str) and max_desc_len is not None:
            if max_desc_len == 0:
                continue
            value = value if len(value) <= max_desc_len else value[:max_desc_len] + "..."
        out[key] = value if key in ("default", "enum", "example") else \
            canonical(value, max_desc_len, names=key == "properties")
    return out


def build(opts: CRDOptions) -> dict[str, Any]:
    """The CRD as an ordered dict (key order as ``kubectl get crd -o yaml`` prints it)."""
    _check(opts)
    kind = opts.kind
    plural = opts.plural or pluralize(kind)
    names: dict[str, Any] = {"kind": kind, "listKind": opts.list_kind or f"{kind}List", "plural": plural,
                             "singular": opts.singular or kind.lower()}
    if opts.short_names:
        names["shortNames"] = list(opts.short_names)
    if opts.categories:
        names["categories"] = list(opts.categories)
    storage = opts.storage_version or opts.versions[0]
    schema = root_schema(opts)
    versions = []
    for name in opts.version_schemas:
        if name not in opts.versions:
            raise UsageError(f"a schema is given for version {name}, which is not one of {', '.join(opts.versions)}")
    for name in opts.versions:
        v: dict[str, Any] = {"name": name, "served": name not in opts.unserved, "storage": name == storage}
        if name in opts.deprecated:
            v["deprecated"] = True
            if opts.deprecated[name]:
                v["deprecationWarning"] = opts.deprecated[name]
        if opts.columns:
            v["additionalPrinterColumns"] = [c.to_dict() for c in opts.columns]
        own = opts.version_schemas.get(name)
        v["schema"] = {"openAPIV3Schema": schema if own is None else root_schema(opts, own)}
        if opts.selectable_fields:
            v["selectableFields"] = [{"jsonPath": p} for p in opts.selectable_fields]
        sub: dict[str, Any] = {}
        if opts.scale:
            scale = {"specReplicasPath": opts.scale.spec_replicas_path,
                     "statusReplicasPath": opts.scale.status_replicas_path}
            if opts.scale.label_selector_path:
                scale["labelSelectorPath"] = opts.scale.label_selector_path
            sub["scale"] = scale
        if opts.status:
            sub["status"] = {}
        if sub:
            v["subresources"] = sub
        versions.append(v)
    spec: dict[str, Any] = {"group": opts.group, "names": names, "scope": opts.scope, "versions": versions}
    if opts.webhook:
        spec = {"conversion": conversion(opts.webhook), **spec}
    metadata: dict[str, Any] = {}
    if opts.annotations:
        metadata["annotations"] = dict(sorted(opts.annotations.items()))
    if opts.labels:
        metadata["labels"] = dict(sorted(opts.labels.items()))
    metadata["name"] = f"{plural}.{opts.group}"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": metadata, "spec": spec}


def conversion(w: Webhook) -> dict[str, Any]:
    """``spec.conversion`` for a webhook (what kubebuilder's webhook_in_<plural>.yaml patch adds)."""
    if bool(w.service) == bool(w.url):
        raise UsageError("a conversion webhook needs either --webhook-service NAMESPACE/NAME or --webhook-url")
    client: dict[str, Any] = {}
    if w.ca_bundle:
        client["caBundle"] = w.ca_bundle
    if w.service:
        m = re.fullmatch(r"([a-z0-9-]+)/([a-z0-9-]+)", w.service)
        if not m:
            raise UsageError(f"--webhook-service {w.service}: expected NAMESPACE/NAME")
        svc: dict[str, Any] = {"name": m.group(2), "namespace": m.group(1), "path": w.path or "/convert"}
        if w.port is not None:
            svc["port"] = w.port
        client["service"] = svc
    else:
        if not (w.url or "").startswith("https://"):
            raise UsageError(f"--webhook-url {w.url}: must be an https:// URL")
        client["url"] = w.url
    return {"strategy": "Webhook",
            "webhook": {"clientConfig": client, "conversionReviewVersions": list(w.review_versions)}}


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    """``key=value`` items of a repeated flag (labels, annotations)."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"{flag} {item}: expected KEY=VALUE")
        out[key] = value
    return out
