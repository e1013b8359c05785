"""The ``kubectl x crd`` group: generation, conversion, validation and apply of CRDs.

Commands register themselves on ``app``; a verb that is not built yet does not exist here yet.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="CRDs: generate apiextensions.k8s.io/v1 definitions, convert v1beta1, validate offline, apply.",
    no_args_is_help=True,
)

from k8sx.cli.crd import ls  # noqa: E402,F401  (verbs register themselves on app)
