"""``kubectl x crd apply FILE...``: create or replace CRDs in the cluster of the kubeconfig.

Validated offline first (an invalid CRD never reaches the server: exit 1 with the rule), then each
CRD is created or replaced whole; ``--dry-run=server`` has the API server validate and default
without storing, ``--dry-run=client`` only reports what would change.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from k8sx.cli.crd import app
from k8sx.cli.kubeflags import kube_command
from k8sx.cli.output import Format, OutputOpt, QuietOpt, render
from k8sx.kube import KubeConnection

FilesArg = Annotated[list[str], typer.Argument(metavar="FILE...", help="YAML/JSON files ('-' = stdin).")]


class DryRun(StrEnum):
    none = "none"
    server = "server"
    client = "client"


DryRunOpt = Annotated[DryRun, typer.Option("--dry-run", help="none, server (validated by the API server, not "
                                        "stored) or client (nothing sent).")]
NoValidateOpt = Annotated[bool, typer.Option("--no-validate", help="Skip the offline validator.")]


def load_crds(files: list[str], no_validate: bool) -> list[dict]:
    """The CRDs of ``files``, refused (exit 1, each rule printed) if the offline validator objects."""
    from k8sx.crd.documents import load_files
    from k8sx.crd.validate import validate_documents
    from k8sx.errors import K8sxError

    docs = load_files(files)
    if not docs:
        raise K8sxError("no documents in " + ", ".join(files))
    if not no_validate:
        problems = validate_documents(docs)
        for p in problems:
            sys.stderr.write(f"{p}\n")
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise K8sxError(f"{len(errors)} problem(s) found by the offline validator; nothing sent "
                            "(--no-validate to send anyway)")
    return [d.data for d in docs]


@app.command("apply")
@kube_command
def apply(
    files: FilesArg,
    *,
    kube: KubeConnection,
    dry_run: DryRunOpt = DryRun.none,
    no_validate: NoValidateOpt = False,
    output: OutputOpt = Format.table,
    quiet: QuietOpt = False,
) -> None:
    """Create or replace the CRDs of FILE... (validated offline first)."""
    from k8sx.crd import apply as crd_apply

    crds = load_crds(files, no_validate)
    objects = []
    for crd in crds:  # one at a time, so what was done before a failure has been said
        for o in crd_apply.apply(kube, [crd], dry_run.value):
            objects.append(o.object)
            if output is Format.table:
                sys.stdout.write((o.name if quiet else o.line()) + "\n")
                sys.stdout.flush()
    if output is not Format.table:
        render(objects, output)
