"""``k8sx runtime stats``: containers' CPU, memory and writable-layer usage, as ``crictl stats`` prints it.

Two samples ``--seconds`` apart give the CPU percentage, as crictl computes it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format, go_table
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client, human_size, parse_labels, render_document, truncate_id


@app.command()
def stats(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="[ID]", show_default=False)] = "",
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all containers (default shows just "
                                       "running).")] = False,
    id_: Annotated[str, typer.Option("--id", help="Filter by container id.")] = "",
    pod: Annotated[str, typer.Option("--pod", "-p", help="Filter by pod id.")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", help="Filter by key=value label.")] = None,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.table,
    seconds: Annotated[int, typer.Option("--seconds", "-s", help="Sample duration for CPU usage in "
                                         "seconds.")] = 1,
) -> None:
    """List container(s) resource usage statistics."""
    import time

    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict

    f = api_pb2.ContainerStatsFilter(id=id_ or container_id, pod_sandbox_id=pod, label_selector=parse_labels(label))
    req = api_pb2.ListContainerStatsRequest(filter=f)
    with client(ctx) as c:
        first = sorted(c.call(c.runtime.ListContainerStats, req, "listing container stats").stats,
                       key=lambda s: s.attributes.id)
        if output is not Format.table:
            render_document({"stats": [to_dict(s) for s in first]}, output, jsonpb=True)
            return
        old = {s.attributes.id: s for s in first}
        time.sleep(seconds)
        now = sorted(c.call(c.runtime.ListContainerStats, req, "listing container stats").stats,
                     key=lambda s: s.attributes.id)
    rows = []
    for s in now:
        cpu = s.cpu.usage_core_nano_seconds.value
        mem = s.memory.working_set_bytes.value
        if not all_ and cpu == 0 and mem == 0:
            continue
        prev = old.get(s.attributes.id)
        if prev is None:
            continue
        perc = 0.0
        duration = s.cpu.timestamp - prev.cpu.timestamp
        if cpu and duration:
            perc = (cpu - prev.cpu.usage_core_nano_seconds.value) / duration * 100
        rows.append({"id": truncate_id(s.attributes.id, ""), "name": s.attributes.metadata.name,
                     "cpu": f"{perc:.2f}", "mem": human_size(mem, 4),
                     "disk": human_size(s.writable_layer.used_bytes.value, 4),
                     "inodes": s.writable_layer.inodes_used.value})
    go_table(rows, [("id", "CONTAINER"), ("name", "NAME"), ("cpu", "CPU %"), ("mem", "MEM"), ("disk", "DISK"),
                    ("inodes", "INODES")])
