"""``k8sx runtime exec -s [--timeout N] CONTAINER-ID COMMAND [ARG...]``: run a command in a container (ExecSync).

Output and exit code are the command's, as with ``crictl exec -s``. Interactive (streaming) exec
comes with the streaming server, a later piece; without ``-s`` the verb says so.
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
    timeout: Annotated[int, typer.Option("--timeout", help="Timeout in seconds (0: none).")] = 0,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep STDIN open "
                                              "(streaming exec: not supported yet).")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-TTY (streaming exec: not "
                                      "supported yet).")] = False,
) -> None:
    """Run a command in a running container."""
    from k8sx.cri.api.runtime.v1 import api_pb2

    if not sync or interactive or tty:
        raise UsageError("only synchronous exec (-s/--sync) is supported; streaming exec is not available yet")
    with client(ctx) as c:
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
