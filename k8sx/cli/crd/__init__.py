"""The ``kubectl x crd`` group: generation, conversion, validation and apply of CRDs.

Commands register themselves on ``app``.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="CRDs: generate apiextensions.k8s.io/v1 definitions, convert v1beta1, validate offline, apply.",
    no_args_is_help=True,
)

# verbs register themselves on app
from k8sx.cli.crd import apply, convert, diff, generate, ls, validate  # noqa: E402,F401
