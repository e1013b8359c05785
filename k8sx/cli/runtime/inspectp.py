"""``k8sx runtime inspectp POD-ID...``: a pod sandbox's status (and verbose info) as ``crictl inspectp`` prints it."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import ago, client, render_document, rfc3339nano, sorted_nested, status_document


@app.command()
def inspectp(
    ctx: typer.Context,
    pod_ids: Annotated[list[str], typer.Argument(metavar="POD-ID [POD-ID...]", help="Pods to inspect.")],
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.json,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show verbose information.")] = False,
) -> None:
    """Display the status of one or more pods."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict

    with client(ctx) as c:
        for pod_id in pod_ids:
            r = c.call(c.runtime.PodSandboxStatus,
                       api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=not quiet),
                       f"getting the pod sandbox status of {pod_id!r}")
            st = r.status
            if output is Format.table:
                typer.echo(f"ID: {st.id}")
                typer.echo(f"Name: {st.metadata.name}")
                typer.echo(f"UID: {st.metadata.uid}")
                typer.echo(f"Namespace: {st.metadata.namespace}")
                typer.echo(f"Attempt: {st.metadata.attempt}")
                typer.echo(f"Status: {api_pb2.PodSandboxState.Name(st.state)}")
                typer.echo(f"Created: {ago(st.created_at)}")
                if st.network.ip:
                    typer.echo(f"IP Addresses: {st.network.ip}")
                    for ip in st.network.additional_ips:
                        typer.echo(f"Additional IP: {ip.ip}")
                for title, mapping in (("Labels", st.labels), ("Annotations", st.annotations)):
                    if mapping:
                        typer.echo(f"{title}:")
                        for k in sorted(mapping):
                            typer.echo(f"\t{k} -> {mapping[k]}")
                continue
            status = to_dict(st)
            status["createdAt"] = rfc3339nano(st.created_at)
            render_document(status_document(sorted_nested(status), dict(r.info)), output)
