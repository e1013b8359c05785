"""The ``k8sx cni`` group: cnitool's verbs over the ``k8sx.cni`` runner.

Commands register themselves on ``app``; a verb that is not built yet does not exist here yet.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="CNI: add, check and delete pod networks with libcni's semantics; install k8sx's CNI plugins.",
    no_args_is_help=True,
)

from k8sx.cli.cni import attach, info, plugins  # noqa: E402,F401  (verbs register themselves on app)
