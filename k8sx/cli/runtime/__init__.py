"""The ``k8sx runtime`` group: the CRI server and crictl's verbs, one module per verb as crictl keeps one file per verb.

Commands register themselves on ``app``; a verb that is not built yet does not exist here yet.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="CRI: serve runtime.v1 (pods under runc, images from OCI registries); drive any CRI endpoint like crictl.",
    no_args_is_help=True,
)
