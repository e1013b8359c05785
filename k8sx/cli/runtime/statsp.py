"""``k8sx runtime statsp``: pods' CPU and memory usage (sum of their containers), as ``crictl statsp`` prints it."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format, go_table
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client, human_size, parse_labels, render_document, truncate_id


@app.command()
def statsp(
    ctx: typer.Context,
    pod_id: Annotated[str, typer.Argument(metavar="[ID]", show_default=False)] = "",
    id_: Annotated[str, typer.Option("--id", help="Filter by pod id.")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", help="Filter by key=value label.")] = None,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.table,
    seconds: Annotated[int, typer.Option("--seconds", "-s", help="Sample duration for CPU usage in "
                                         "seconds.")] = 1,
) -> None:
    """List pod resource usage statistics."""
    import time

    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict

    req = api_pb2.ListPodSandboxStatsRequest(filter=api_pb2.PodSandboxStatsFilter(
        id=id_ or pod_id, label_selector=parse_labels(label)))
    with client(ctx) as c:
        first = list(c.call(c.runtime.ListPodSandboxStats, req, "listing pod sandbox stats").stats)
        if output is not Format.table:
            render_document({"stats": [to_dict(s) for s in first]}, output, jsonpb=True)
            return
        old = {s.attributes.id: s for s in first}
        time.sleep(seconds)
        now = list(c.call(c.runtime.ListPodSandboxStats, req, "listing pod sandbox stats").stats)
    rows = []
    for s in now:
        cpu = s.linux.cpu.usage_core_nano_seconds.value
        mem = s.linux.memory.working_set_bytes.value
        prev = old.get(s.attributes.id)
        if (cpu == 0 and mem == 0) or prev is None:
            continue
        perc = 0.0
        duration = s.linux.cpu.timestamp - prev.linux.cpu.timestamp
        if cpu and duration:
            perc = (cpu - prev.linux.cpu.usage_core_nano_seconds.value) / duration * 100
        rows.append({"pod": s.attributes.metadata.name, "id": truncate_id(s.attributes.id, ""),
                     "cpu": f"{perc:.2f}", "mem": human_size(mem, 4)})
    go_table(rows, [("pod", "POD"), ("id", "POD ID"), ("cpu", "CPU %"), ("mem", "MEM")])
