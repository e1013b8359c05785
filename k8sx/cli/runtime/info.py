"""``k8sx runtime info``: the runtime's status conditions and configuration, as ``crictl info`` prints them."""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client, render_document, status_document


@app.command()
def info(
    ctx: typer.Context,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format (json or yaml).")] = Format.json,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show verbose information.")] = False,
) -> None:
    """Display information of the container runtime."""
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import to_dict

    with client(ctx) as c:
        r = c.call(c.runtime.Status, api_pb2.StatusRequest(verbose=not quiet), "getting status of runtime")
    status = to_dict(r.status)
    render_document(status_document(status, dict(r.info)), Format.json if output is Format.table else output)
