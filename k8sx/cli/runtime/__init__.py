"""The ``k8sx runtime`` group: the CRI server and crictl's verbs, one module per verb as crictl keeps one file per verb.

crictl's global flags (``-r``, ``-i``, ``-c``, ``-t``, ``-D``) belong to the group and come before the
verb, as with crictl: ``k8sx runtime -r unix:///run/containerd/containerd.sock images``. Commands
register themselves on ``app``; a verb that is not built yet does not exist here yet.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime.common import GlobalOptions

app = typer.Typer(
    help="CRI: serve runtime.v1 (pods under runc, images from OCI registries); drive any CRI endpoint like crictl.",
    no_args_is_help=True,
)


@app.callback()
def runtime(
    ctx: typer.Context,
    runtime_endpoint: Annotated[str | None, typer.Option(
        "--runtime-endpoint", "-r", show_default=False,
        help="CRI runtime endpoint, e.g. unix:///run/k8sx/k8sx.sock (env CONTAINER_RUNTIME_ENDPOINT; default: "
             "k8sx's socket, then crictl's defaults).")] = None,
    image_endpoint: Annotated[str | None, typer.Option(
        "--image-endpoint", "-i", show_default=False,
        help="CRI image endpoint (env IMAGE_SERVICE_ENDPOINT; default: the runtime endpoint).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", show_default=False,
        help="Client config file (env CRI_CONFIG_FILE; default /etc/crictl.yaml).")] = None,
    timeout: Annotated[str | None, typer.Option(
        "--timeout", "-t", show_default=False,
        help="Timeout of connecting and of each call, e.g. 2s, 20s (default 2s; 0 or less = default).")] = None,
    debug: Annotated[bool, typer.Option("--debug", "-D", help="Print debug information.")] = False,
) -> None:
    """CRI: serve runtime.v1, or drive any CRI endpoint with crictl's verbs."""
    # debug None (not given) lets crictl.yaml's "debug: true" apply
    ctx.obj = GlobalOptions(runtime_endpoint, image_endpoint, config, timeout, debug or None)


from k8sx.cli.runtime import (  # noqa: E402,F401  (verbs register themselves on app)
    attach,
    create,
    exec_,
    imagefsinfo,
    images,
    import_,
    info,
    inspect,
    inspecti,
    inspectp,
    logs,
    pods,
    port_forward,
    ps,
    pull,
    rm,
    rmi,
    rmp,
    runp,
    serve,
    start,
    stats,
    statsp,
    stop,
    stopp,
    update,
    version,
)
