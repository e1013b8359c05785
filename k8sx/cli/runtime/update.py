"""``k8sx runtime update [flags] CONTAINER-ID...``: change a container's cgroup limits, as ``crictl update``."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def update(
    ctx: typer.Context,
    container_ids: Annotated[list[str], typer.Argument(metavar="CONTAINER-ID [CONTAINER-ID...]")],
    cpu_period: Annotated[int, typer.Option("--cpu-period", help="CPU CFS period to be used for hardcapping "
                                            "(in usecs). 0 to use system default.")] = 0,
    cpu_quota: Annotated[int, typer.Option("--cpu-quota", help="CPU CFS hardcap limit (in usecs). Allowed cpu "
                                           "time in a given period.")] = 0,
    cpu_share: Annotated[int, typer.Option("--cpu-share", help="CPU shares (relative weight vs. other "
                                           "containers).")] = 0,
    memory: Annotated[int, typer.Option("--memory", help="Memory limit (in bytes).")] = 0,
    cpuset_cpus: Annotated[str, typer.Option("--cpuset-cpus", help="CPU(s) to use.")] = "",
    cpuset_mems: Annotated[str, typer.Option("--cpuset-mems", help="Memory node(s) to use.")] = "",
) -> None:
    """Update one or more running containers."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    resources = api_pb2.LinuxContainerResources(cpu_period=cpu_period, cpu_quota=cpu_quota, cpu_shares=cpu_share,
                                                memory_limit_in_bytes=memory, cpuset_cpus=cpuset_cpus,
                                                cpuset_mems=cpuset_mems)
    with client(ctx) as c:
        for ctr in container_ids:
            c.call(c.runtime.UpdateContainerResources,
                   api_pb2.UpdateContainerResourcesRequest(container_id=ctr, linux=resources),
                   f"updating the container resources of {ctr!r}")
            typer.echo(ctr)
