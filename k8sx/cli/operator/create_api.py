"""``k8sx operator create api``: a new kind in an operator project (model, CRD, controller, tests)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from k8sx.cli.operator import app
from k8sx.operator import EXAMPLES

Example = StrEnum("Example", {name: name for name in EXAMPLES})  # type: ignore[misc]

create = typer.Typer(help="Add to an operator project.", no_args_is_help=True)
app.add_typer(create, name="create")


@create.command("api")
def create_api(
    group: Annotated[str, typer.Option("--group", help="API group, before the project's domain (e.g. app).")],
    version: Annotated[str, typer.Option("--version", help="API version (v1, v1beta1, ...).")],
    kind: Annotated[str, typer.Option("--kind", help="Kind, CamelCase (e.g. AppService).")],
    example: Annotated[Example | None, typer.Option(  # type: ignore[valid-type]
        "--example", help="Start from an example instead of an empty kind: appservice (a Deployment and a NodePort "
                          "Service).")] = None,
    directory: Annotated[str, typer.Option("--dir", help="The project (where PROJECT is).")] = ".",
) -> None:
    """Add a kind: its pydantic model, CRD, kopf controller, sample, unit and end-to-end tests."""
    from k8sx.cli.operator.render import report
    from k8sx.operator.scaffold import create_api as do_create

    report(do_create(directory, group, version, kind, example.value if example else None))
