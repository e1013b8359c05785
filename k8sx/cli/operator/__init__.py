"""The ``k8sx operator`` group: operator project scaffolding.

Commands register themselves on ``app``; a verb that is not built yet does not exist here yet.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Operators: scaffold kopf-based Python operators (CRD + controller) that run out of the box.",
    no_args_is_help=True,
)

# verbs register themselves on app
from k8sx.cli.operator import create_api, init, manifests  # noqa: E402,F401
