"""``k8sx runtime pods``: list pod sandboxes as ``crictl pods`` does (filters, -q, -v, -o json|yaml, table)."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format, go_table
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import ago, client, go_time, newest_first, parse_labels, render_document, truncate_id
from k8sx.errors import UsageError

POD_STATES = {0: "Ready", 1: "NotReady"}


@app.command()
def pods(
    ctx: typer.Context,
    id_: Annotated[str, typer.Option("--id", help="Filter by pod id.")] = "",
    name: Annotated[str, typer.Option("--name", help="Filter by pod name regular expression pattern.")] = "",
    namespace: Annotated[str, typer.Option("--namespace", help="Filter by pod namespace regular expression "
                                           "pattern.")] = "",
    state: Annotated[str, typer.Option("--state", "-s", help="Filter by pod state (ready, notready).")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", help="Filter by key=value label.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show verbose info for pods.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="List only pod IDs.")] = False,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.table,
    latest: Annotated[bool, typer.Option("--latest", "-l", help="Show the most recently created pod.")] = False,
    last: Annotated[int, typer.Option("--last", "-n", help="Show last n recently created pods. "
                                      "Set 0 for unlimited.")] = 0,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Show output without truncating the ID.")] = False,
) -> None:
    """List pods."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict

    f = api_pb2.PodSandboxFilter(id=id_, label_selector=parse_labels(label))
    if state:
        wanted = {"ready": api_pb2.SANDBOX_READY, "notready": api_pb2.SANDBOX_NOTREADY}.get(state.lower())
        if wanted is None:
            raise UsageError("--state should be ready or notready")
        f.state.state = wanted
    with client(ctx) as c:
        items = c.call(c.runtime.ListPodSandbox, api_pb2.ListPodSandboxRequest(filter=f),
                       "listing pod sandboxes").items
    items = newest_first(list(items), name, namespace, latest, last)
    if output is not Format.table:
        render_document({"items": [to_dict(p) for p in items]}, output, jsonpb=True)
        return
    if quiet:
        for p in items:
            typer.echo(p.id)
        return
    if verbose:
        for p in items:
            typer.echo(f"ID: {p.id}")
            if p.metadata.name:
                typer.echo(f"Name: {p.metadata.name}")
            if p.metadata.uid:
                typer.echo(f"UID: {p.metadata.uid}")
            if p.metadata.namespace:
                typer.echo(f"Namespace: {p.metadata.namespace}")
            if p.metadata.attempt:
                typer.echo(f"Attempt: {p.metadata.attempt}")
            typer.echo(f"Status: {POD_STATES.get(p.state, 'Unknown')}")
            typer.echo(f"Created: {go_time(p.created_at)}")
            for title, mapping in (("Labels", p.labels), ("Annotations", p.annotations)):
                if mapping:
                    typer.echo(f"{title}:")
                    for k in sorted(mapping):
                        typer.echo(f"\t{k} -> {mapping[k]}")
            typer.echo(f"Runtime: {p.runtime_handler or '(default)'}")
            typer.echo("")
        return
    rows = [{"id": p.id if no_trunc else truncate_id(p.id, ""), "created": ago(p.created_at),
             "state": POD_STATES.get(p.state, "Unknown"), "name": p.metadata.name,
             "namespace": p.metadata.namespace, "attempt": p.metadata.attempt,
             "runtime": p.runtime_handler or "(default)"} for p in items]
    go_table(rows, [("id", "POD ID"), ("created", "CREATED"), ("state", "STATE"), ("name", "NAME"),
                    ("namespace", "NAMESPACE"), ("attempt", "ATTEMPT"), ("runtime", "RUNTIME")])
