"""``k8sx runtime start CONTAINER-ID...``: start created containers; prints each id, as crictl."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def start(
    ctx: typer.Context,
    container_ids: Annotated[list[str], typer.Argument(metavar="CONTAINER-ID [CONTAINER-ID...]")],
) -> None:
    """Start one or more created containers."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    with client(ctx) as c:
        for ctr in container_ids:
            c.call(c.runtime.StartContainer, api_pb2.StartContainerRequest(container_id=ctr),
                   f"starting the container {ctr!r}")
            typer.echo(ctr)
