"""``k8sx runtime logs [-f] [--tail N] [-t] CONTAINER-ID``: a container's log, read from its CRI log file as crictl.

stdout records go to stdout and stderr records to stderr; ``-f`` follows until the container exits.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.errors import K8sxError


@app.command()
def logs(
    ctx: typer.Context,
    container_id: Annotated[str, typer.Argument(metavar="CONTAINER-ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow log output.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Number of lines to show from the end of the logs "
                                      "(-1: all).")] = -1,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t", help="Show timestamps.")] = False,
    since: Annotated[str, typer.Option("--since", help="Show logs since a timestamp (RFC3339) or a relative "
                                       "duration (e.g. 42m).")] = "",
    previous: Annotated[bool, typer.Option("--previous", "-p", help="Print the logs of the previous instance "
                                           "of the container (not supported by the CRI log path).")] = False,
) -> None:
    """Fetch the logs of a container."""
    import time

    from k8sx.cri import crilog
    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.client import parse_duration

    if previous:
        raise K8sxError("--previous needs kubelet's log directory layout; not supported")
    since_ns = 0
    if since:
        since_ns = crilog.parse_time(since) or time.time_ns() - int(parse_duration(since) * 1e9)
    with client(ctx) as c:
        st = c.call(c.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=container_id),
                    f"getting the status of the container {container_id!r}").status
        if not st.log_path:
            raise K8sxError(f"the container {container_id!r} has no log path")
        try:
            records = crilog.read(st.log_path)
        except OSError as e:
            raise K8sxError(f"failed to read {st.log_path}: {e.strerror}") from None
        records = [r for r in records if not since_ns or r.time_ns >= since_ns]
        if tail >= 0:
            full = [i for i, r in enumerate(records) if not r.partial]
            start = full[-tail - 1] + 1 if 0 < tail < len(full) else (len(records) if tail == 0 else 0)
            records = records[start:]
        for r in records:
            _write(r, timestamps)
        if follow and st.state == api_pb2.CONTAINER_RUNNING:

            def running() -> bool:
                s = c.call(c.runtime.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=st.id),
                           "getting the container status").status
                return s.state == api_pb2.CONTAINER_RUNNING

            try:
                for r in crilog.follow(st.log_path, running):
                    _write(r, timestamps)
            except KeyboardInterrupt:
                pass


def _write(r: object, timestamps: bool) -> None:
    out = sys.stdout.buffer if r.stream == "stdout" else sys.stderr.buffer  # type: ignore[attr-defined]
    if timestamps:
        out.write(r.timestamp.encode() + b" ")  # type: ignore[attr-defined]
    out.write(r.message + (b"" if r.partial else b"\n"))  # type: ignore[attr-defined]
    out.flush()
