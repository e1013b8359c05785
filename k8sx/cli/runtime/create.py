"""``k8sx runtime create POD-ID CONTAINER-CONFIG POD-CONFIG``: create a container in a pod, as ``crictl create``.

The two files are crictl's (JSON or YAML). ``--with-pull`` pulls the image first (crictl's
``pull-image-on-create``); the container id is printed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def create(
    ctx: typer.Context,
    pod_id: Annotated[str, typer.Argument(metavar="POD", help="The pod sandbox id.")],
    container_config: Annotated[str, typer.Argument(metavar="container-config.[json|yaml]")],
    pod_config: Annotated[str, typer.Argument(metavar="pod-config.[json|yaml]")],
    no_pull: Annotated[bool, typer.Option("--no-pull", help="Do not pull the image on container creation "
                                          "(overrides pull-image-on-create=true in config).")] = False,
    with_pull: Annotated[bool, typer.Option("--with-pull", help="Pull the image on container creation "
                                            "(overrides pull-image-on-create=false in config).")] = False,
    cancel_timeout: Annotated[str | None, typer.Option(
        "--cancel-timeout", "-T", show_default=False,
        help="Time to wait for the request before cancelling it, e.g. 30s.")] = None,
) -> None:
    """Create a new container."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import message_from_file, parse_duration

    config = message_from_file(container_config, "ContainerConfig")
    sandbox = message_from_file(pod_config, "PodSandboxConfig")
    with client(ctx) as c:
        pull = bool(c.settings.file_options.get("pull-image-on-create", False))
        if with_pull:
            pull = True
        if no_pull:
            pull = False
        if cancel_timeout:
            c.settings.timeout = parse_duration(cancel_timeout)
        if pull:
            c.pull_image(config.image.image, annotations=dict(config.image.annotations), sandbox_config=sandbox)
        r = c.call(c.runtime.CreateContainer,
                   api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox),
                   "creating container")
    typer.echo(r.container_id)
