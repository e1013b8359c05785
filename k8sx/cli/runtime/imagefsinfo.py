"""``k8sx runtime imagefsinfo``: where the runtime keeps images and how much it uses (crictl's output).

The same call crictl and kubelet probe on connect, so it doubles as an image-service health check.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client, render_document, status_document


@app.command()
def imagefsinfo(
    ctx: typer.Context,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.json,
) -> None:
    """Return image filesystem info."""
    from k8sx.cri.client import to_dict

    with client(ctx) as c:
        r = c.image_fs_info()
    for fs in r.image_filesystems:
        if output is Format.table:
            typer.echo(f"TimeStamp: {fs.timestamp}")
            typer.echo(f"UsedBytes: {fs.used_bytes.value}")
            typer.echo(f"InodesUsed: {fs.inodes_used.value}")
            typer.echo(f"Mountpoint: {fs.fs_id.mountpoint}")
        else:
            render_document(status_document(to_dict(fs)), output)
