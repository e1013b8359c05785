"""``k8sx runtime stop [-t SECONDS] CONTAINER-ID...``: SIGTERM, then SIGKILL after the timeout; prints each id."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def stop(
    ctx: typer.Context,
    container_ids: Annotated[list[str], typer.Argument(metavar="CONTAINER-ID [CONTAINER-ID...]")],
    timeout: Annotated[int, typer.Option("--timeout", "-t", help="Seconds to wait to kill the container after "
                                         "a graceful stop is requested.")] = 0,
) -> None:
    """Stop one or more running containers."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    with client(ctx) as c:
        c.settings.timeout = max(c.settings.timeout, timeout + c.settings.timeout)
        for ctr in container_ids:
            c.call(c.runtime.StopContainer, api_pb2.StopContainerRequest(container_id=ctr, timeout=timeout),
                   f"stopping the container {ctr!r}")
            typer.echo(ctr)
