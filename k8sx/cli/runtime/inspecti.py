"""``k8sx runtime inspecti IMAGE...``: the status of images, with the runtime's verbose info (crictl's output).

JSON (the default) and YAML print ``{"status": <Image>, "info": ...}`` per image, as crictl does; a
missing image is an error, since there is nothing to inspect.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.output import Format
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client, human_size, render_document, status_document
from k8sx.errors import K8sxError


@app.command()
def inspecti(
    ctx: typer.Context,
    images: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="Image ids, names or name@digest.")],
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.json,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show verbose information.")] = False,
) -> None:
    """Return the status of one or more images."""
    from k8sx.cri.client import to_dict

    with client(ctx) as c:
        for ref in images:
            r = c.image_status(ref, verbose=not quiet)
            if not r.HasField("image"):
                raise K8sxError(f"no such image {ref!r} present")
            if output is not Format.table:
                render_document(status_document(to_dict(r.image), r.info), output)
                continue
            img = r.image
            typer.echo(f"ID: {img.id}")
            for tag in img.repo_tags:
                typer.echo(f"Tag: {tag}")
            for digest in img.repo_digests:
                typer.echo(f"Digest: {digest}")
            typer.echo(f"Size: {human_size(img.size)}")
            if not quiet:  # Go's %v of a map, as crictl prints it
                typer.echo("Info: map[" + " ".join(f"{k}:{r.info[k]}" for k in sorted(r.info)) + "]")
