"""``k8sx runtime import FILE``: load an OCI layout or docker-archive into the node's image store.

Offline nodes (and the demo) get images without a registry this way. It works on the store directly,
like ``ctr images import`` does, so no server is needed; the store's locks make it safe while
``k8sx runtime serve`` uses the same ``--root``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="OCI layout (directory or .tar) or docker-archive .tar.")],
    root: Annotated[str, typer.Option("--root", help="State root of k8sx (the image store is <root>/images).")
                    ] = "/var/lib/k8sx",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print image ids only.")] = False,
) -> None:
    """Import images from an OCI layout or a docker-archive tarball into the local store."""
    from k8sx.cri.images.store import ImageStore, images_dir

    images = ImageStore(images_dir(root)).import_archive(file)
    for img in images:
        if quiet:
            typer.echo(img.id)
        else:
            typer.echo(f"Imported {', '.join(img.repo_tags) or '<untagged>'} ({img.id})")
