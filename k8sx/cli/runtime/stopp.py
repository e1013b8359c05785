"""``k8sx runtime stopp POD-ID...``: stop pod sandboxes (their containers, then the network), as crictl."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def stopp(
    ctx: typer.Context,
    pod_ids: Annotated[list[str], typer.Argument(metavar="POD-ID [POD-ID...]", help="Pods to stop.")],
) -> None:
    """Stop one or more running pods."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    with client(ctx) as c:
        for pod_id in pod_ids:
            c.call(c.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                   f"stopping the pod sandbox {pod_id!r}")
            typer.echo(f"Stopped sandbox {pod_id}")
