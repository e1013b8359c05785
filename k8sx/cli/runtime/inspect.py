"""``k8sx runtime inspect CONTAINER-ID...``: a container's status (and verbose info) as ``crictl inspect`` prints it."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import ago, client, render_document, rfc3339nano, sorted_nested, status_document

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# ContainerStatus fields newer than crictl 1.26's cri-api v0.26 (it cannot print them); dropped so that
# our output is crictl's: top-level ones, and those of the nested ImageSpec.
NEWER_STATUS_FIELDS = ("imageId", "user", "stopSignal")
NEWER_IMAGE_SPEC_FIELDS = ("userSpecifiedImage", "runtimeHandler", "imageRef")


@app.command()
def inspect(
    ctx: typer.Context,
    container_ids: Annotated[list[str], typer.Argument(metavar="CONTAINER-ID [CONTAINER-ID...]")],
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.json,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show verbose information.")] = False,
) -> None:
    """Display the status of one or more containers."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict

    with client(ctx) as c:
        for ctr in container_ids:
            r = c.call(c.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=ctr, verbose=not quiet),
                       f"getting the status of the container {ctr!r}")
            st = r.status
            if output is Format.table:
                typer.echo(f"ID: {st.id}")
                typer.echo(f"Name: {st.metadata.name}")
                typer.echo(f"Attempt: {st.metadata.attempt}")
                typer.echo(f"State: {api_pb2.ContainerState.Name(st.state)}")
                typer.echo(f"Created: {ago(st.created_at)}")
                if st.state != api_pb2.CONTAINER_CREATED:
                    typer.echo(f"Started: {ago(st.started_at)}")
                if st.state == api_pb2.CONTAINER_EXITED:
                    typer.echo(f"Finished: {ago(st.finished_at)}")
                    typer.echo(f"Exit Code: {st.exit_code}")
                for title, mapping in (("Labels", st.labels), ("Annotations", st.annotations)):
                    if mapping:
                        typer.echo(f"{title}:")
                        for k in sorted(mapping):
                            typer.echo(f"\t{k} -> {mapping[k]}")
                continue
            status = to_dict(st)
            for key in NEWER_STATUS_FIELDS:
                status.pop(key, None)
            for key in NEWER_IMAGE_SPEC_FIELDS:
                (status.get("image") or {}).pop(key, None)
            status["createdAt"] = rfc3339nano(st.created_at)
            status["startedAt"] = rfc3339nano(st.started_at) if st.state != api_pb2.CONTAINER_CREATED \
                else GO_ZERO_TIME
            exited = st.state == api_pb2.CONTAINER_EXITED or (st.state == api_pb2.CONTAINER_UNKNOWN
                                                              and st.finished_at > 0)
            status["finishedAt"] = rfc3339nano(st.finished_at) if exited else GO_ZERO_TIME
            render_document(status_document(sorted_nested(status), dict(r.info)), output)
