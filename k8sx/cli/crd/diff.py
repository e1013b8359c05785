"""``kubectl x crd diff FILE...``: what applying the files would change, as a unified diff.

The right side is what the API server would store (its server-side dry-run answer, defaults
included), the left side the live CRD, both without the fields the server owns; exit 0 when
nothing would change and 1 when something would (as ``kubectl diff`` and ``diff``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.crd import app
from k8sx.cli.crd.apply import FilesArg, NoValidateOpt, load_crds
from k8sx.cli.kubeflags import kube_command
from k8sx.kube import KubeConnection


@app.command("diff")
@kube_command
def diff(
    files: FilesArg,
    *,
    kube: KubeConnection,
    no_validate: NoValidateOpt = False,
    client_side: Annotated[bool, typer.Option("--client-side", help="Compare with the file itself, no "
                                              "server-side dry run.")] = False,
) -> None:
    """Diff live CRDs against FILE... (exit 1 if they differ)."""
    from k8sx.crd import apply as crd_apply

    crds = load_crds(files, no_validate)
    changed = 0
    for _name, text in crd_apply.diff(kube, crds, server_dry_run=not client_side):
        if text:
            changed += 1
            sys.stdout.write(text)
    if changed:
        raise typer.Exit(1)
