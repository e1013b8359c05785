"""``crd generate`` as one call: command-line values in, a validated v1 CRD out.

The command line gives strings (``--field``, ``--column``, ``--rule``, ``--deprecated-version
v1beta1=warning``); turning them into :class:`~k8sx.crd.assemble.CRDOptions`, picking the schema
source (flags, a Python model, a sample) and validating the result with the offline validator
live here, so the CLI module only declares options and prints.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from k8sx.crd import assemble, markers, schema
from k8sx.crd.documents import dump, load_file, load_text
from k8sx.crd.validate import Problem, schema_at, validate_documents
from k8sx.errors import UsageError


@dataclass
class Request:
    """Everything ``crd generate`` was given, as given."""

    group: str | None = None
    kind: str | None = None
    versions: list[str] = field(default_factory=list)
    plural: str | None = None
    singular: str | None = None
    list_kind: str | None = None
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    scope: str = "Namespaced"
    storage_version: str | None = None
    unserved: list[str] = field(default_factory=list)
    deprecated: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    status: bool = True
    scale: bool = False
    scale_spec_path: str | None = None
    scale_status_path: str | None = None
    scale_selector_path: str | None = None
    selectable_fields: list[str] = field(default_factory=list)
    webhook_service: str | None = None
    webhook_url: str | None = None
    webhook_path: str | None = None
    webhook_port: int | None = None
    webhook_ca_bundle: str | None = None
    review_versions: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    max_desc_len: int | None = None
    from_model: str | None = None
    from_sample: str | None = None
    version_models: list[str] = field(default_factory=list)  # VERSION=MODULE:CLASS


@dataclass
class Generated:
    """The CRD, its text in the asked format, notes on what was assumed, and the validator's findings
    (located as ``<generated>:LINE`` in that text)."""

    crd: dict[str, Any]
    text: str
    notes: list[str]
    problems: list[Problem]


def generate(req: Request, fmt: str = "yaml") -> Generated:
    """Build the CRD and check it with the offline validator."""
    if req.from_model and req.from_sample:
        raise UsageError("--from-model and --from-sample exclude each other")
    notes: list[str] = []
    group, kind, versions = req.group, req.kind, list(req.versions)
    if req.from_sample:
        docs = load_file(req.from_sample)
        objs = [(d.data, d.where(())) for d in docs]
        inferred = schema.from_samples(objs)
        root = inferred.root
        notes.extend(inferred.notes)
        group = group or inferred.group
        kind = kind or inferred.kind
        versions = versions or [inferred.version]
        if req.fields:
            root = _overlay(root, schema.from_fields(req.fields))
    elif req.from_model:
        cls = schema.import_object(req.from_model)
        root = schema.from_model(cls)
        kind = kind or getattr(cls, "__name__", None)
        if req.fields:
            root = _overlay(root, schema.from_fields(req.fields))
    else:
        root = schema.from_fields(req.fields)
    if not group:
        raise UsageError("--group is required (e.g. --group stable.example.com)")
    if not kind:
        raise UsageError("--kind is required (e.g. --kind CronTab)")
    versions = versions or ["v1"]
    root_rules = _apply_rules(root, req.rules)
    version_schemas = {}
    for item in req.version_models:
        name, eq, ref = item.partition("=")
        if not eq or not name or not ref:
            raise UsageError(f"--version-model {item}: expected VERSION=MODULE:CLASS")
        version_schemas[name] = schema.from_model(schema.import_object(ref))
        if name not in versions:
            versions.append(name)
    opts = assemble.CRDOptions(
        group=group, kind=kind, versions=versions, schema=root, plural=req.plural, singular=req.singular,
        list_kind=req.list_kind, short_names=list(req.short_names), categories=list(req.categories),
        scope=req.scope, storage_version=req.storage_version, unserved=list(req.unserved),
        deprecated=_deprecated(req.deprecated), columns=[assemble.parse_column(c) for c in req.columns],
        status=req.status, scale=_scale(req), selectable_fields=list(req.selectable_fields),
        webhook=_webhook(req), labels=assemble.parse_pairs(req.labels, "--label"),
        annotations=assemble.parse_pairs(req.annotations, "--annotation"), max_desc_len=req.max_desc_len,
        root_validations=root_rules, version_schemas=version_schemas,
    )
    crd = assemble.build(opts)
    built = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    if opts.scale:
        for path in (opts.scale.spec_replicas_path, opts.scale.status_replicas_path):
            if not _holds_integer(built, path):
                notes.append(f"--scale: {path} is not an integer field of the schema, so the server prunes "
                             f"it and scaling cannot work (add --field {path.lstrip('.')}:integer)")
    text = dump([crd], fmt)
    return Generated(crd, text, notes, validate_documents(load_text(text, "<generated>")))


def _holds_integer(root: dict[str, Any], path: str) -> bool:
    """Whether an integer at ``path`` survives pruning: declared as one, or under a node that keeps
    unknown fields (such as the default open ``status``)."""
    target = schema_at(root, path)
    if target is not None:
        return target.get("type") == "integer" or bool(target.get("x-kubernetes-int-or-string"))
    parts = path.lstrip(".").split(".")
    node: Any = root
    for part in parts[:-1]:
        node = (node.get("properties") or {}).get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return True
    return False


def _overlay(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``--field`` specs on top of a model's or sample's schema: they add fields or replace them."""
    out = dict(base)
    props = dict(out.get("properties") or {})
    for name, sub in (extra.get("properties") or {}).items():
        if name in props and sub.get("type") == "object" and props[name].get("type") == "object" \
                and "properties" in sub:
            props[name] = _overlay(props[name], sub)
        else:
            props[name] = sub
    out["properties"] = props
    req = list(out.get("required") or [])
    req += [r for r in extra.get("required") or [] if r not in req]
    if req:
        out["required"] = req
    return out


_RULE_PATH = re.compile(r"(\.|[A-Za-z_$][A-Za-z0-9_$-]*(\[\])?(\.[A-Za-z_$][A-Za-z0-9_$-]*(\[\])?)*)")


def _apply_rules(root: dict[str, Any], rules: list[str]) -> list[dict[str, Any]]:
    """``--rule PATH:RULE`` or ``--rule 'PATH:{"rule": ..., "message": ...}'``; PATH ``.`` is the object."""
    at_root: list[dict[str, Any]] = []
    for text in rules:
        path, sep, body = text.partition(":")
        if not sep or not _RULE_PATH.fullmatch(path) or not body.strip():
            raise UsageError(f"--rule {text}: expected PATH:RULE (PATH '.' for the whole object, or e.g. spec, "
                             "spec.ports[]), or PATH:{\"rule\": ..., \"message\": ...}")
        entry = _rule_entry(body.strip(), text)
        if path == ".":
            at_root.append(entry)
            continue
        node = root
        for seg in path.split("."):
            name = seg[:-2] if seg.endswith("[]") else seg
            props = node.get("properties") or {}
            if name not in props:
                raise UsageError(f"--rule {text}: no field {path} in the schema (declare it with --field)")
            node = props[name]
            if seg.endswith("[]"):
                if not isinstance(node.get("items"), dict):
                    raise UsageError(f"--rule {text}: {name} is not a list")
                node = node["items"]
        node.setdefault("x-kubernetes-validations", []).append(entry)
    return at_root


def _rule_entry(body: str, text: str) -> dict[str, Any]:
    if not body.startswith("{"):
        return {"rule": body}
    try:
        value = json.loads(body)
    except ValueError as e:
        raise UsageError(f"--rule {text}: not valid JSON: {e}") from None
    known = {"rule": "rule", "message": "message", "messageExpression": "message_expression",
             "reason": "reason", "fieldPath": "field_path", "optionalOldSelf": "optional_old_self"}
    if not isinstance(value, dict) or not isinstance(value.get("rule"), str):
        raise UsageError(f"--rule {text}: the JSON object needs a \"rule\" string")
    unknown = set(value) - set(known)
    if unknown:
        raise UsageError(f"--rule {text}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return markers.cel_rule(**{known[k]: v for k, v in value.items()})


def _deprecated(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        name, eq, warning = item.partition("=")
        out[name] = warning if eq else None
    return out


def _scale(req: Request) -> assemble.Scale | None:
    if not (req.scale or req.scale_spec_path or req.scale_status_path or req.scale_selector_path):
        return None
    s = assemble.Scale()
    s.spec_replicas_path = req.scale_spec_path or s.spec_replicas_path
    s.status_replicas_path = req.scale_status_path or s.status_replicas_path
    s.label_selector_path = req.scale_selector_path
    return s


def _webhook(req: Request) -> assemble.Webhook | None:
    if not (req.webhook_service or req.webhook_url):
        if req.webhook_path or req.webhook_port or req.webhook_ca_bundle or req.review_versions:
            raise UsageError("webhook options need --webhook-service NAMESPACE/NAME or --webhook-url")
        return None
    ca = None
    if req.webhook_ca_bundle:
        try:
            with open(req.webhook_ca_bundle, "rb") as f:
                ca = base64.b64encode(f.read()).decode()
        except OSError as e:
            raise UsageError(f"--webhook-ca-bundle {req.webhook_ca_bundle}: {e.strerror}") from None
    return assemble.Webhook(service=req.webhook_service, url=req.webhook_url, path=req.webhook_path,
                            port=req.webhook_port, ca_bundle=ca, review_versions=req.review_versions or ["v1"])
