"""``k8sx runtime rmp [-f] [-a] POD-ID...``: remove pod sandboxes, as crictl (``-f`` stops a ready one first)."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.errors import K8sxError, UsageError


@app.command()
def rmp(
    ctx: typer.Context,
    pod_ids: Annotated[list[str] | None, typer.Argument(metavar="POD-ID [POD-ID...]", show_default=False,
                                                        help="Pods to remove.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Force removal of the pod sandbox, "
                                        "disregarding if running.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove all pods.")] = False,
) -> None:
    """Remove one or more pods."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    ids = list(pod_ids or [])
    with client(ctx) as c:
        if all_:
            ids = [p.id for p in c.call(c.runtime.ListPodSandbox, api_pb2.ListPodSandboxRequest(),
                                        "listing pod sandboxes").items]
        elif not ids:
            raise UsageError("ID cannot be empty")
        failed = 0
        for pod_id in ids:
            try:
                st = c.call(c.runtime.PodSandboxStatus, api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
                            f"getting sandbox status of pod {pod_id!r}")
                if st.status.state == api_pb2.SANDBOX_READY:
                    if not force:
                        raise K8sxError(f"pod sandbox {pod_id!r} is running, please stop it first")
                    c.call(c.runtime.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                           f"stopping the pod sandbox {pod_id!r}")
                    typer.echo(f"Stopped sandbox {pod_id}")
                c.call(c.runtime.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                       f"removing the pod sandbox {pod_id!r}")
                typer.echo(f"Removed sandbox {pod_id}")
            except K8sxError as e:
                typer.echo(f"Error: {e.message}", err=True)
                failed += 1
        if failed:
            raise K8sxError(f"unable to remove {failed} of {len(ids)} pod sandbox(es)")
