"""``k8sx runtime pull NAME[:TAG|@DIGEST]``: have the runtime pull an image, with crictl's flags and output.

Credentials go in the CRI ``AuthConfig`` exactly as crictl builds it: ``--creds USER[:PASS]``,
``--auth BASE64`` or ``--username`` with a password prompt. PullImage is a single call with no
progress stream, so a spinner with the elapsed time shows that work is going on (on a terminal only;
pipes get just the result line).
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.errors import UsageError


def parse_creds(creds: str) -> tuple[str, str]:
    if not creds:
        raise UsageError("credentials can't be empty")
    user, sep, password = creds.partition(":")
    if sep and not user:
        raise UsageError("username can't be empty")
    return user, password


def auth_config(creds: str, auth: str, username: str) -> dict[str, str] | None:
    """The AuthConfig fields for the given flags (crictl's rules: --username wins, --creds excludes --auth)."""
    if username:
        import getpass

        return {"username": username, "password": getpass.getpass("Enter Password:")}
    if creds and auth:
        raise UsageError("both `--creds` and `--auth` are specified")
    if creds:
        user, password = parse_creds(creds)
        return {"username": user, "password": password}
    if auth:
        return {"auth": auth}
    return None


def parse_annotations(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"annotation {item!r} must be key=value")
        out[key] = value
    return out


@app.command()
def pull(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(metavar="NAME[:TAG|@DIGEST]", help="The image to pull.")],
    creds: Annotated[str, typer.Option("--creds", envvar="CRICTL_CREDS", metavar="USERNAME[:PASSWORD]",
                                       help="Credentials for the registry.")] = "",
    auth: Annotated[str, typer.Option("--auth", envvar="CRICTL_AUTH", metavar="AUTH_STRING",
                                      help="Base64 of 'USERNAME[:PASSWORD]' for the registry.")] = "",
    username: Annotated[str, typer.Option("--username", "-u",
                                          help="Username for the registry; the password is prompted for.")] = "",
    pod_config: Annotated[str | None, typer.Option("--pod-config", metavar="POD-CONFIG.[json|yaml]",
                                                   help="Pod sandbox config to pull the image for.")] = None,
    annotation: Annotated[list[str] | None, typer.Option("--annotation", "-a", metavar="KEY=VALUE",
                                                         help="Annotation on the pull (repeatable).")] = None,
) -> None:
    """Pull an image from a registry."""
    if not image:
        raise UsageError("Image name cannot be empty")
    from k8sx.cri.client import message_from_file

    auth_fields = auth_config(creds, auth, username)
    sandbox = message_from_file(pod_config, "PodSandboxConfig") if pod_config else None
    annotations = parse_annotations(annotation or [])
    with client(ctx) as c:
        image_ref = _with_spinner(f"Pulling {image}", lambda: c.pull_image(image, auth_fields, annotations, sandbox))
    typer.echo(f"Image is up to date for {image_ref}")


def _with_spinner(label: str, work: Any) -> Any:
    if not sys.stderr.isatty():
        return work()
    from rich.console import Console

    console = Console(stderr=True)
    start = time.monotonic()
    from rich.markup import escape

    with console.status(escape(label)) as status:
        import threading

        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["value"] = work()
            except BaseException as e:  # handed to the main thread below
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.1)
            status.update(f"{escape(label)} ({time.monotonic() - start:.1f}s)")
    if "error" in result:
        raise result["error"]
    console.print(f"[green]✓[/] pulled {escape(label.removeprefix('Pulling '))} in {time.monotonic() - start:.1f}s",
                  highlight=False)
    return result["value"]
