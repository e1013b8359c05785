"""``k8sx runtime rm [-f] [-a] CONTAINER-ID...``: remove containers (``-f`` also running ones), as crictl."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.errors import K8sxError, UsageError


@app.command()
def rm(
    ctx: typer.Context,
    container_ids: Annotated[list[str] | None, typer.Argument(metavar="CONTAINER-ID [CONTAINER-ID...]",
                                                              show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Force removal of the container, "
                                        "disregarding if running.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove all containers.")] = False,
) -> None:
    """Remove one or more containers."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    ids = list(container_ids or [])
    with client(ctx) as c:
        if all_:
            ids = [x.id for x in c.call(c.runtime.ListContainers, api_pb2.ListContainersRequest(),
                                        "listing containers").containers]
        elif not ids:
            raise UsageError("ID cannot be empty")
        failed = 0
        for ctr in ids:
            try:
                st = c.call(c.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=ctr),
                            f"getting the status of container {ctr!r}")
                if st.status.state == api_pb2.CONTAINER_RUNNING:
                    if not force:
                        raise K8sxError(f"container {ctr!r} is running, please stop it first or use -f")
                    c.call(c.runtime.StopContainer, api_pb2.StopContainerRequest(container_id=ctr, timeout=0),
                           f"stopping the container {ctr!r}")
                c.call(c.runtime.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=ctr),
                       f"removing the container {ctr!r}")
                typer.echo(ctr)
            except K8sxError as e:
                typer.echo(f"Error: {e.message}", err=True)
                failed += 1
        if failed:
            raise K8sxError(f"unable to remove {failed} of {len(ids)} container(s)")
