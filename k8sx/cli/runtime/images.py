"""``k8sx runtime images [REPOSITORY[:TAG]]``: list images as ``crictl images`` does.

One table row per repo tag (``IMAGE TAG IMAGE ID SIZE``, laid out as crictl's tabwriter does),
``<none>`` for an image known only by digest, ids cut to 13 characters unless ``--no-trunc``;
``-q`` prints ids, ``-o json|yaml`` the ListImages response. The REPOSITORY filter is applied here
too, with the same rule the server uses (``k8sx.cri.filters``), because containerd ignores it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from k8sx.cli.output import Format, go_table
from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client, human_size, render_document, truncate_id

NONE = "<none>"


def sort_key(image: Any) -> tuple[int, str]:
    """crictl's order: by first repo tag, else first repo digest, else id."""
    if image.repo_tags:
        return 0, image.repo_tags[0]
    if image.repo_digests:
        return 1, image.repo_digests[0]
    return 2, image.id


def repo_digest(image: Any) -> tuple[str, str]:
    """(repository, digest) of the first repo digest, ``<none>`` when the image has none."""
    if not image.repo_digests:
        return NONE, NONE
    name, sep, digest = image.repo_digests[0].partition("@")
    return (name, digest) if sep else ("errorName", "errorRepoDigest")


def repo_tag_pairs(image: Any, name_from_digest: str) -> list[tuple[str, str]]:
    if not image.repo_tags:
        return [(name_from_digest, NONE)]
    pairs = []
    for tag in image.repo_tags:
        name, sep, t = tag.rpartition(":")
        if not sep or "/" in t:
            pairs.append(("errorRepoTag", "errorRepoTag"))
            continue
        pairs.append((name_from_digest if name == NONE else name, t))
    return pairs


@app.command()
def images(
    ctx: typer.Context,
    repository: Annotated[str, typer.Argument(metavar="[REPOSITORY[:TAG]]", show_default=False,
                                              help="Only images of this repository (and tag).")] = "",
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format.")] = Format.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show image IDs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show verbose info for images.")] = False,
    digests: Annotated[bool, typer.Option("--digests", help="Show digests.")] = False,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Show output without truncating the ID.")] = False,
) -> None:
    """List images."""
    from k8sx.cri.client import to_dict
    from k8sx.cri.filters import image_matches

    with client(ctx) as c:
        found = c.list_images(repository)
    found = sorted((i for i in found if image_matches(repository, i.id, i.repo_tags, i.repo_digests)), key=sort_key)
    if output is not Format.table:
        render_document({"images": [to_dict(i) for i in found]}, output)
        return
    if quiet:
        for image in found:
            typer.echo(image.id)
        return
    if verbose:
        for image in found:
            typer.echo(f"ID: {image.id}")
            for tag in image.repo_tags:
                typer.echo(f"RepoTags: {tag}")
            for digest in image.repo_digests:
                typer.echo(f"RepoDigests: {digest}")
            if image.size:
                typer.echo(f"Size: {image.size}")
            if image.HasField("uid"):
                typer.echo(f"Uid: {image.uid.value}")
            if image.username:
                typer.echo(f"Username: {image.username}")
            typer.echo("")
        return
    rows = []
    for image in found:
        name, digest = repo_digest(image)
        image_id = image.id if no_trunc else truncate_id(image.id)
        if not no_trunc and digest != NONE:
            digest = truncate_id(digest)
        for repo, tag in repo_tag_pairs(image, name):
            rows.append({"image": repo, "tag": tag, "digest": digest, "id": image_id,
                         "size": human_size(image.size)})
    columns = [("image", "IMAGE"), ("tag", "TAG")]
    if digests:
        columns.append(("digest", "DIGEST"))
    columns += [("id", "IMAGE ID"), ("size", "SIZE")]
    go_table(rows, columns)
