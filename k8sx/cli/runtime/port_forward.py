"""``k8sx runtime port-forward [--address A] POD-ID [LOCAL_PORT:]REMOTE_PORT...``: forward local ports to a
pod (crictl port-forward).

PortForward returns a streaming URL; local connections are carried over one SPDY connection to it
(portforward.k8s.io) until Ctrl-C. A local port 0 (``:80``) picks a free port, printed as crictl does.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app
from k8sx.cli.runtime.common import client
from k8sx.errors import UsageError


def parse_port(spec: str) -> tuple[int, int]:
    local, sep, remote = spec.rpartition(":")
    if not sep:
        local = remote
    try:
        lp, rp = int(local or "0"), int(remote)
    except ValueError:
        raise UsageError(f"invalid port {spec!r}: expected [LOCAL_PORT:]REMOTE_PORT") from None
    if not 0 <= lp < 65536 or not 0 < rp < 65536:
        raise UsageError(f"invalid port {spec!r}: ports are 1-65535 (local 0 picks a free one)")
    return lp, rp


@app.command("port-forward")
def port_forward(
    ctx: typer.Context,
    pod_id: Annotated[str, typer.Argument(metavar="POD-ID")],
    ports: Annotated[list[str], typer.Argument(metavar="[LOCAL_PORT:]REMOTE_PORT...")],
    address: Annotated[str, typer.Option("--address", help="Local address to listen on.")] = "127.0.0.1",
) -> None:
    """Forward local ports to a pod."""
    import sys

    from k8sx.cri.api.runtime.v1 import api_pb2
    from k8sx.cri.streaming.client import PortForwarder

    pairs = [parse_port(p) for p in ports]
    if address == "localhost":
        address = "127.0.0.1"
    with client(ctx) as c:
        r = c.call(c.runtime.PortForward, api_pb2.PortForwardRequest(pod_sandbox_id=pod_id,
                                                                     port=[rp for _, rp in pairs]),
                   "port forward")
    fwd = PortForwarder(r.url, pairs, address=address,
                        on_error=lambda msg: print(f"error: {msg}", file=sys.stderr, flush=True))
    for host, local, remote in fwd.bound:
        print(f"Forwarding from {host}:{local} -> {remote}", flush=True)
    try:
        fwd.serve()
    except KeyboardInterrupt:
        fwd.close()
