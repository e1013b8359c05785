"""``k8sx runtime version``: the runtime's name and versions, printed exactly as ``crictl version`` does.

It is also the cheapest way to check that an endpoint is up and speaks runtime.v1.
"""

from __future__ import annotations

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client


@app.command()
def version(ctx: typer.Context) -> None:
    """Display runtime version information."""
    with client(ctx) as c:
        r = c.version()
    # Go's fmt.Println("Version: ", v) puts a second space between the two operands; keep it.
    typer.echo(f"Version:  {r.version}")
    typer.echo(f"RuntimeName:  {r.runtime_name}")
    typer.echo(f"RuntimeVersion:  {r.runtime_version}")
    typer.echo(f"RuntimeApiVersion:  {r.runtime_api_version}")
