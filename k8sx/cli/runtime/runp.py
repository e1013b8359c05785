"""``k8sx runtime runp POD-CONFIG``: run a pod sandbox from crictl's JSON/YAML pod config; prints its id."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def runp(
    ctx: typer.Context,
    pod_config: Annotated[str, typer.Argument(metavar="pod-config.[json|yaml]", help="The pod sandbox config.")],
    runtime: Annotated[str, typer.Option("--runtime", "-r", help="Runtime handler to use.")] = "",
    cancel_timeout: Annotated[str | None, typer.Option(
        "--cancel-timeout", "-T", show_default=False,
        help="Time to wait for the request before cancelling it, e.g. 30s.")] = None,
) -> None:
    """Run a new pod."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import message_from_file, parse_duration

    config = message_from_file(pod_config, "PodSandboxConfig")
    with client(ctx) as c:
        if cancel_timeout:
            c.settings.timeout = parse_duration(cancel_timeout)
        r = c.call(c.runtime.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime),
                   "run pod sandbox")
    typer.echo(r.pod_sandbox_id)
