"""``k8sx cni install-plugins`` and ``k8sx cni plugind``: put k8sx's CNI plugins on a node and
keep them fast.

Why: a runtime finds CNI plugins as executables in a directory (``/opt/cni/bin``); ours are thin
clients of the plugin daemon (``plugind``), which keeps the interpreter and pyroute2 loaded so a
plugin call costs its netlink and iptables work only. Both are thin wrappers over ``k8sx.cni``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from k8sx.cli.cni import app

DirOpt = Annotated[str, typer.Option("--dir", "-d", help="Directory to install the plugin executables into.")]
RefNamesOpt = Annotated[bool, typer.Option(
    "--reference-names", help="Install as bridge, host-local, loopback, portmap, flannel (replacing the reference "
    "plugins of those names) instead of k8sx-bridge, k8sx-host-local, ...")]
PythonOpt = Annotated[str | None, typer.Option("--python", help="Interpreter for the executables (default: this one).")]
NativeOpt = Annotated[bool, typer.Option(
    "--native/--no-native", help="Compile the ~1 ms native client the executables start with (needs cc); "
    "--no-native starts Python (~20 ms) instead.")]
SocketOpt = Annotated[str | None, typer.Option(
    "--socket", help="Unix socket to serve on (default: $K8SX_CNI_PLUGIND_SOCKET or /run/k8sx/cni-plugind.sock).")]


@app.command("install-plugins")
def install_plugins(directory: DirOpt = "/opt/cni/bin", reference_names: RefNamesOpt = False,
                    python: PythonOpt = None, native: NativeOpt = True) -> None:
    """Install k8sx's CNI plugins (bridge, host-local, loopback, portmap, flannel) as executables."""
    from k8sx.cni.install import install

    done = install(directory, reference_names, python, native)
    for path in done.plugins:
        typer.echo(path)
    if done.client:
        typer.echo(f"native client: {done.client}", err=True)
    elif native:
        typer.echo("no C compiler: the executables start Python directly (slower; see --no-native)", err=True)


@app.command("plugind")
def plugind(socket_path: SocketOpt = None) -> None:
    """Serve k8sx's CNI plugins to their executables over a unix socket (runs in the foreground)."""
    import os
    import signal
    import threading

    from k8sx.cni.plugin_client import socket_path as default_socket
    from k8sx.cni.plugind import serve

    path = socket_path or default_socket(os.environ)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(path, ready=lambda: typer.echo(f"serving k8sx CNI plugins on {path}", err=True), stop=stop)
