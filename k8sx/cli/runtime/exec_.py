"""``k8sx runtime exec [-i] [-t] [-s [--timeout N]] CONTAINER-ID COMMAND [ARG...]``: run a command in a container.

With ``-s`` it is ExecSync (output and exit code at the end, as ``crictl exec -s``); otherwise Exec
returns a streaming URL and the command runs interactively over it (stdin with ``-i``, a terminal
with ``-t``), against k8sx's server or containerd's. The exit code is the command's.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.errors import UsageError


@app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="CONTAINER-ID")],
    command: Annotated[list[str], typer.Argument(metavar="COMMAND [ARG...]")],
    sync: Annotated[bool, typer.Option("--sync", "-s", help="Run the command synchronously.")] = False,
    timeout: Annotated[int, typer.Option("--timeout", help="Timeout in seconds (0: none; with -s).")] = 0,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep STDIN open.")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-TTY.")] = False,
) -> None:
    """Run a command in a running container."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    if sync and (interactive or tty):
        raise UsageError("-s/--sync runs without stdin and terminal: drop -i/-t, or drop -s")
    with client(ctx) as c:
        if not sync:
            r = c.call(c.runtime.Exec, api_pb2.ExecRequest(container_id=container_id, cmd=command, tty=tty,
                                                           stdin=interactive, stdout=True, stderr=not tty),
                       "execing command in container")
            from k8sx.cli.runtime import stream

            code = stream.run(r.url, stdin=interactive, tty=tty)
            if code:
                raise typer.Exit(code)
            return
        if timeout > 0:
            c.settings.timeout = max(c.settings.timeout, timeout + 5.0)
        else:
            c.settings.timeout = max(c.settings.timeout, 24 * 3600.0)
        r = c.call(c.runtime.ExecSync, api_pb2.ExecSyncRequest(container_id=container_id, cmd=command,
                                                               timeout=timeout),
                   "execing command in container synchronously")
    sys.stdout.buffer.write(r.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(r.stderr)
    sys.stderr.buffer.flush()
    if r.exit_code:
        raise typer.Exit(r.exit_code)
