"""``kubectl x crd generate``: an apiextensions.k8s.io/v1 CRD from flags, a Python model or a sample.

controller-gen reads Go markers; Python operators had nothing but hand-written YAML (kopf#524).
This command takes the same knobs as flags (``--field`` carries the value markers), a pydantic
model or dataclass (``--from-model module:Class``) or a sample custom object (``--from-sample``),
checks the result with the offline validator and prints it as deterministic YAML or JSON.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from k8sx.cli.crd import app
from k8sx.cli.output import DocFormat, DocOutputOpt

_NAMES = "Names"
_VERSIONS = "Versions"
_SCHEMA = "Schema"
_EXTRAS = "Columns, subresources, selectable fields"
_CONV = "Conversion webhook"
_META = "CRD metadata"

Many = list[str] | None


class Scope(StrEnum):
    Namespaced = "Namespaced"
    Cluster = "Cluster"


def _opt(*names: str, help: str, panel: str, metavar: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False, metavar=metavar)


@app.command("generate")
def generate(
    group: Annotated[str | None, _opt("--group", "-g", help="API group, a DNS subdomain with a dot.",
                                      panel=_NAMES)] = None,
    kind: Annotated[str | None, _opt("--kind", "-k", help="Kind (CamelCase); default: the model's class name.",
                                     panel=_NAMES)] = None,
    plural: Annotated[str | None, _opt("--plural", help="Plural resource name (default: guessed from kind).",
                                       panel=_NAMES)] = None,
    singular: Annotated[str | None, _opt("--singular", help="Singular name (default: lower-case kind).",
                                         panel=_NAMES)] = None,
    list_kind: Annotated[str | None, _opt("--list-kind", help="List kind (default: <Kind>List).",
                                          panel=_NAMES)] = None,
    short_name: Annotated[Many, _opt("--short-name", help="Short name (repeatable).", panel=_NAMES)] = None,
    category: Annotated[Many, _opt("--category", help="Category such as 'all' (repeatable).",
                                   panel=_NAMES)] = None,
    scope: Annotated[Scope, typer.Option("--scope", help="Namespaced or Cluster.", rich_help_panel=_NAMES)
                     ] = Scope.Namespaced,
    version: Annotated[Many, _opt("--version", help="A served version (repeatable; default v1, or the "
                                  "sample's).", panel=_VERSIONS)] = None,
    storage_version: Annotated[str | None, _opt("--storage-version", help="The storage version (default: the "
                                                "first).", panel=_VERSIONS)] = None,
    unserved_version: Annotated[Many, _opt("--unserved-version", help="A version kept but not served.",
                                           panel=_VERSIONS)] = None,
    deprecated_version: Annotated[Many, _opt("--deprecated-version", metavar="VERSION[=WARNING]",
                                             help="Mark a version deprecated, with an optional warning.",
                                             panel=_VERSIONS)] = None,
    field: Annotated[Many, _opt("--field", metavar="PATH:TYPE[:CONSTRAINT,...]",
                                help="A field, e.g. spec.replicas:integer:required,minimum=1 or "
                                     "spec.ports[].name:string. Types: string, integer, int32, int64, number, "
                                     "boolean, object, date-time, int-or-string, quantity, any, embedded, []T, "
                                     "map[T]. Constraints: see 'crd generate --help-constraints'.",
                                panel=_SCHEMA)] = None,
    rule: Annotated[Many, _opt("--rule", metavar="PATH:CEL", help="A CEL validation on a field ('.' = the "
                               "object); PATH:{\"rule\":..,\"message\":..,\"reason\":..} for the options.",
                               panel=_SCHEMA)] = None,
    from_model: Annotated[str | None, _opt("--from-model", metavar="MODULE:CLASS",
                                           help="Schema from a pydantic model or dataclass (imported from the "
                                                "current directory).", panel=_SCHEMA)] = None,
    from_sample: Annotated[str | None, _opt("--from-sample", metavar="FILE",
                                            help="Schema, group, version and kind inferred from sample "
                                                 "objects.", panel=_SCHEMA)] = None,
    version_model: Annotated[Many, _opt("--version-model", metavar="VERSION=MODULE:CLASS",
                                        help="A version with its own model (the others use the main schema); "
                                             "repeatable.", panel=_SCHEMA)] = None,
    max_desc_len: Annotated[int | None, _opt("--max-desc-len", help="Cut descriptions (0 drops them).",
                                             panel=_SCHEMA)] = None,
    column: Annotated[Many, _opt("--column", metavar="NAME:TYPE:JSONPATH[:format=..,priority=..]",
                                 help="A printer column for kubectl get.", panel=_EXTRAS)] = None,
    status: Annotated[bool, typer.Option("--status/--no-status", help="The status subresource.",
                                         rich_help_panel=_EXTRAS)] = True,
    scale: Annotated[bool, typer.Option("--scale", help="The scale subresource (.spec.replicas, "
                                        ".status.replicas).", rich_help_panel=_EXTRAS)] = False,
    scale_spec_path: Annotated[str | None, _opt("--scale-spec-path", help="specReplicasPath.",
                                                panel=_EXTRAS)] = None,
    scale_status_path: Annotated[str | None, _opt("--scale-status-path", help="statusReplicasPath.",
                                                  panel=_EXTRAS)] = None,
    scale_selector_path: Annotated[str | None, _opt("--scale-selector-path", help="labelSelectorPath.",
                                                    panel=_EXTRAS)] = None,
    selectable_field: Annotated[Many, _opt("--selectable-field", metavar="JSONPATH",
                                           help="A field usable in --field-selector, e.g. .spec.color.",
                                           panel=_EXTRAS)] = None,
    webhook_service: Annotated[str | None, _opt("--webhook-service", metavar="NAMESPACE/NAME",
                                                help="Conversion webhook service.", panel=_CONV)] = None,
    webhook_url: Annotated[str | None, _opt("--webhook-url", help="Conversion webhook URL (https).",
                                            panel=_CONV)] = None,
    webhook_path: Annotated[str | None, _opt("--webhook-path", help="Service path (default /convert).",
                                             panel=_CONV)] = None,
    webhook_port: Annotated[int | None, _opt("--webhook-port", help="Service port.", panel=_CONV)] = None,
    webhook_ca_bundle: Annotated[str | None, _opt("--webhook-ca-bundle", metavar="FILE",
                                                  help="PEM file of the CA that signed the webhook's "
                                                       "certificate.", panel=_CONV)] = None,
    conversion_review_version: Annotated[Many, _opt("--conversion-review-version",
                                                    help="ConversionReview versions (default v1).",
                                                    panel=_CONV)] = None,
    label: Annotated[Many, _opt("--label", metavar="KEY=VALUE", help="A label on the CRD.", panel=_META)] = None,
    annotation: Annotated[Many, _opt("--annotation", metavar="KEY=VALUE", help="An annotation on the CRD.",
                                     panel=_META)] = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Print even if the offline validator "
                                              "finds problems.")] = False,
    help_constraints: Annotated[bool, typer.Option("--help-constraints", help="List --field constraints and "
                                                   "the controller-gen markers they stand for.")] = False,
    output: DocOutputOpt = DocFormat.yaml,
) -> None:
    """Generate an apiextensions.k8s.io/v1 CRD (exit 1 if the result breaks an API-server rule)."""
    from k8sx.crd import generate as gen

    if help_constraints:
        from k8sx.crd.markers import ALIASES, CONSTRAINTS

        for name, (marker, kind_, text) in CONSTRAINTS.items():
            value = "" if kind_ == "flag" else "=VALUE"
            aliases = [a for a, t in ALIASES.items() if t == name and a != name]
            extra = f" (also {', '.join(aliases)})" if aliases else ""
            sys.stdout.write(f"{name}{value:<7} {marker:<48} {text}{extra}\n")
        return
    req = gen.Request(
        group=group, kind=kind, versions=version or [], plural=plural, singular=singular, list_kind=list_kind,
        short_names=short_name or [], categories=category or [], scope=scope.value, storage_version=storage_version,
        unserved=unserved_version or [], deprecated=deprecated_version or [], fields=field or [],
        rules=rule or [], columns=column or [], status=status, scale=scale, scale_spec_path=scale_spec_path,
        scale_status_path=scale_status_path, scale_selector_path=scale_selector_path,
        selectable_fields=selectable_field or [], webhook_service=webhook_service, webhook_url=webhook_url,
        webhook_path=webhook_path, webhook_port=webhook_port, webhook_ca_bundle=webhook_ca_bundle,
        review_versions=conversion_review_version or [], labels=label or [], annotations=annotation or [],
        max_desc_len=max_desc_len, from_model=from_model, from_sample=from_sample,
        version_models=version_model or [],
    )
    result = gen.generate(req, output.value)
    for note in result.notes:
        sys.stderr.write(f"warning: {note}\n")
    errors = [p for p in result.problems if p.severity == "error"]
    for p in result.problems:
        sys.stderr.write(f"{p}\n")
    if errors and not no_validate:
        sys.stderr.write(f"Error: the generated CRD breaks {len(errors)} API-server rule(s); fix the flags "
                         "(or print it anyway with --no-validate)\n")
        raise typer.Exit(1)
    sys.stdout.write(result.text)
