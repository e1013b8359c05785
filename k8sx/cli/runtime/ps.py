"""``k8sx runtime ps``: list containers as ``crictl ps`` does (running only unless ``-a``; filters; table/-q/-v/-o)."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format, go_table
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import ago, client, newest_first, parse_labels, render_document, truncate_id
from k8sx.errors import UsageError

CONTAINER_STATES = {0: "Created", 1: "Running", 2: "Exited", 3: "Unknown"}
POD_NAME_LABEL = "io.kubernetes.pod.name"


@app.command()
def ps(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all containers.")] = False,
    id_: Annotated[str, typer.Option("--id", help="Filter by container id.")] = "",
    name: Annotated[str, typer.Option("--name", help="Filter by container name regular expression "
                                      "pattern.")] = "",
    pod: Annotated[str, typer.Option("--pod", "-p", help="Filter by pod id.")] = "",
    image: Annotated[str, typer.Option("--image", help="Filter by container image.")] = "",
    state: Annotated[str, typer.Option("--state", "-s", help="Filter by container state.")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", help="Filter by key=value label.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only display container IDs.")] = False,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.table,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show verbose information for "
                                          "containers.")] = False,
    latest: Annotated[bool, typer.Option("--latest", "-l", help="Show the most recently created container "
                                         "(includes all states).")] = False,
    last: Annotated[int, typer.Option("--last", "-n", help="Show last n recently created containers "
                                      "(includes all states). Set 0 for unlimited.")] = 0,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Show output without truncating the ID.")] = False,
) -> None:
    """List containers."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict
    from k8sx.cri.filters import image_matches

    f = api_pb2.ContainerFilter(id=id_, pod_sandbox_id=pod, label_selector=parse_labels(label))
    if state:
        wanted = {"created": api_pb2.CONTAINER_CREATED, "running": api_pb2.CONTAINER_RUNNING,
                  "exited": api_pb2.CONTAINER_EXITED, "unknown": api_pb2.CONTAINER_UNKNOWN}.get(state.lower())
        if wanted is None:
            raise UsageError("--state should be one of created, running, exited or unknown")
        f.state.state = wanted
    elif not all_:
        f.state.state = api_pb2.CONTAINER_RUNNING
    if latest or last > 0:
        f.ClearField("state")
    with client(ctx) as c:
        found = c.call(c.runtime.ListContainers, api_pb2.ListContainersRequest(filter=f),
                       "listing containers").containers
        found = newest_first(list(found), name, "", latest, last)
        if image:
            images = {i.id: i for i in c.list_images()}

            def selected(ctr: object) -> bool:
                ref = ctr.image.image  # type: ignore[attr-defined]
                img = images.get(ref) or next((i for i in images.values() if ref in i.repo_tags), None)
                if img is None:
                    return image_matches(image, ref, [ref], [])
                return image_matches(image, img.id, img.repo_tags, img.repo_digests)

            found = [x for x in found if selected(x)]
    if output is not Format.table:
        render_document({"containers": [to_dict(x) for x in found]}, output, jsonpb=True)
        return
    if quiet:
        for x in found:
            typer.echo(x.id)
        return
    if verbose:
        for x in found:
            typer.echo(f"ID: {x.id}")
            typer.echo(f"PodID: {x.pod_sandbox_id}")
            if x.metadata.name:
                typer.echo(f"Name: {x.metadata.name}")
            typer.echo(f"Attempt: {x.metadata.attempt}")
            typer.echo(f"State: {CONTAINER_STATES.get(x.state, 'Unknown')}")
            typer.echo(f"Image: {x.image.image}")
            typer.echo(f"Created: {ago(x.created_at)}")
            for title, mapping in (("Labels", x.labels), ("Annotations", x.annotations)):
                if not mapping:  # crictl: a nil map (what an empty one decodes to) prints nothing
                    continue
                typer.echo(f"{title}:")
                for k in sorted(mapping):
                    typer.echo(f"\t{k} -> {mapping[k]}")
            typer.echo("")
        return
    rows = []
    for x in found:
        img = x.image.image
        if not no_trunc and img.startswith("sha256:") and len(img) == 71:
            img = truncate_id(img)
        rows.append({"id": x.id if no_trunc else truncate_id(x.id, ""), "image": img,
                     "created": ago(x.created_at), "state": CONTAINER_STATES.get(x.state, "Unknown"),
                     "name": x.metadata.name, "attempt": x.metadata.attempt,
                     "pod_id": x.pod_sandbox_id if no_trunc else truncate_id(x.pod_sandbox_id, ""),
                     "pod": x.labels.get(POD_NAME_LABEL, "unknown")})
    go_table(rows, [("id", "CONTAINER"), ("image", "IMAGE"), ("created", "CREATED"), ("state", "STATE"),
                    ("name", "NAME"), ("attempt", "ATTEMPT"), ("pod_id", "POD ID"), ("pod", "POD")])
