"""``k8sx runtime rmi IMAGE...``: remove images as ``crictl rmi`` does (``-a`` all, ``-q``/``--prune`` unused).

Each image is looked up first so that its names can be reported (``Deleted: <tag>``); a missing
image is reported and makes the command fail at the end, after the others were removed.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.cri.client import RPCError
from k8sx.errors import K8sxError


@app.command()
def rmi(
    ctx: typer.Context,
    images: Annotated[list[str] | None, typer.Argument(metavar="IMAGE-ID...", help="Image ids or names.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Remove all images.")] = False,
    prune: Annotated[bool, typer.Option("--prune", "-q", help="Remove all unused images.")] = False,
) -> None:
    """Remove one or more images."""
    wanted: dict[str, bool] = dict.fromkeys(images or [], True)
    with client(ctx) as c:
        if all_ or prune:
            for image in c.list_images():
                wanted[image.id] = True
        if prune:
            for container in c.list_containers():
                try:
                    status = c.image_status(container.image.image)
                except RPCError as e:
                    sys.stderr.write(f"Error: {e.message}\n")
                    continue
                if status.HasField("image"):
                    wanted[status.image.id] = False
        if not wanted:
            typer.echo("No images to remove", err=True)
            return
        failed = False
        for ref, remove in wanted.items():
            if not remove:
                continue
            try:
                status = c.image_status(ref)
                if not status.HasField("image"):
                    sys.stderr.write(f"Error: no such image {ref}\n")
                    failed = True
                    continue
                c.remove_image(ref)
            except RPCError as e:
                if not prune:
                    sys.stderr.write(f"Error: {e.message}\n")
                    failed = True
                continue
            for name in status.image.repo_tags or status.image.repo_digests:
                typer.echo(f"Deleted: {name}")
    if failed:
        raise K8sxError("unable to remove the image(s)")
