"""``k8sx runtime attach [-i] [-t] CONTAINER-ID``: attach to a running container's own stdio (crictl attach).

Attach returns a streaming URL; the session runs over it like an interactive exec. The container
must have been created with ``stdin`` for ``-i`` and with ``tty`` for ``-t``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command("attach")
def attach(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="CONTAINER-ID")],
    stdin: Annotated[bool, typer.Option("--stdin", "-i", help="Pass stdin to the container.")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Stdin is a TTY.")] = False,
) -> None:
    """Attach to a running container."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    with client(ctx) as c:
        r = c.call(c.runtime.Attach, api_pb2.AttachRequest(container_id=container_id, stdin=stdin, tty=tty,
                                                           stdout=True, stderr=not tty),
                   "attaching running container")
    from k8sx.cli.runtime import stream

    code = stream.run(r.url, stdin=stdin, tty=tty)
    if code:
        raise typer.Exit(code)
