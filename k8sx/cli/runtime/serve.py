"""``k8sx runtime serve``: run the CRI server (runtime.v1 RuntimeService and ImageService on one socket).

Thin on purpose: flags and the TOML ``--config`` become a ``ServerConfig``, logging goes to stderr,
and ``k8sx.cri.server`` does the rest (socket 0660, SIGTERM -> graceful stop, socket removed).
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.runtime import app


@app.command()
def serve(
    listen: Annotated[str | None, typer.Option(
        "--listen", show_default=False,
        help="Endpoint to serve on (default unix:///run/k8sx/k8sx.sock).")] = None,
    root: Annotated[str | None, typer.Option(
        "--root", show_default=False, help="Persistent state: images, content, snapshots (default /var/lib/k8sx).")
    ] = None,
    state: Annotated[str | None, typer.Option(
        "--state", show_default=False, help="Volatile state (default /run/k8sx).")] = None,
    runtime: Annotated[str | None, typer.Option(
        "--runtime", show_default=False, help="OCI runtime under conmon: runc (default) or crun, or a path.")] = None,
    cni_conf_dir: Annotated[str | None, typer.Option(
        "--cni-conf-dir", show_default=False,
        help="CNI configuration dir; pods join its first network (default /etc/cni/net.d).")] = None,
    cni_bin_dir: Annotated[str | None, typer.Option(
        "--cni-bin-dir", show_default=False,
        help="CNI plugin dirs, colon-separated (default /opt/cni/bin:/usr/lib/cni).")] = None,
    stream_address: Annotated[str | None, typer.Option(
        "--stream-address", show_default=False,
        help="HOST:PORT of the streaming server behind exec/attach/port-forward URLs "
             "(default 127.0.0.1:0, a free loopback port).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", show_default=False,
        help="TOML file with any of: listen, root, state, registries_config (a certs.d dir), docker_config, "
             "runtime, cni_conf_dir, cni_bin_dir, cni_cache_dir, cgroup_parent, max_workers, grace_period, "
             "stream_address.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the CRI (runtime.v1) on a unix socket, as containerd does for kubelet and crictl."""
    import logging

    from k8sx.cri.server import CRIServer, load_config
    from k8sx.errors import UsageError

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise UsageError(f"--log-level: {log_level!r} is not one of debug, info, warning, error")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(config or "", listen=listen, root=root, state=state, runtime=runtime,
                      cni_conf_dir=cni_conf_dir, cni_bin_dir=cni_bin_dir, stream_address=stream_address)
    CRIServer(cfg).serve_forever()
