"""``k8sx operator manifests``: regenerate a project's CRDs and RBAC (what ``make manifests`` runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.operator import app


@app.command("manifests")
def manifests(
    directory: Annotated[str, typer.Option("--dir", help="The project (where PROJECT is).")] = ".",
) -> None:
    """Regenerate config/crd/bases from the models and config/rbac/role.yaml from the +k8sx:rbac markers."""
    from k8sx.cli.operator.render import report
    from k8sx.operator.scaffold import regenerate

    report(regenerate(directory))
