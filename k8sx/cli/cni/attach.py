"""``k8sx cni add|check|del NETWORK NETNS``: cnitool's three verbs over the k8sx runner.

Why a module of its own: these three share the attachment options and the rendering of a chain
(the result as cnitool prints it, ``-o table``, and ``--trace`` as a tree of plugin calls).
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from k8sx.cli.cni import app
from k8sx.cli.cni.common import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CNI_PATH,
    DEFAULT_CONF_DIR,
    ArgsOpt,
    CacheDirOpt,
    CapArgsOpt,
    CniPathOpt,
    ConfDirOpt,
    ContainerIdOpt,
    IfnameOpt,
    runtime_conf,
)
from k8sx.cli.output import Format

if TYPE_CHECKING:
    from k8sx.cni.runner import Runner, TraceStep

NetworkArg = Annotated[str, typer.Argument(help="Network name (the \"name\" of a conf/conflist).",
                                           metavar="NETWORK")]
NetnsArg = Annotated[str, typer.Argument(help="Network namespace: a name under /var/run/netns or a path.",
                                         metavar="NETNS")]
TraceOpt = Annotated[bool, typer.Option("--trace", help="Show the chain as a tree: each plugin's time and result.")]
AddOutputOpt = Annotated[Format, typer.Option("--output", "-o",
                                              help="json (cnitool's format), yaml or table.")]

COLUMNS = [("interface", "interface"), ("address", "address"), ("gateway", "gateway"), ("mac", "mac"),
           ("sandbox", "sandbox")]


def _runner(cni_path: str, cache_dir: str, steps: list[TraceStep] | None) -> Runner:
    from k8sx.cni.runner import Runner

    return Runner(cni_path, cache_dir=cache_dir, on_step=steps.append if steps is not None else None)


def _load(network: str, conf_dir: str) -> Any:
    from k8sx.cni.conf import load_network

    return load_network(network, conf_dir)


def result_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per address of a result (any version), with its interface's name, MAC and sandbox."""
    from k8sx.cni.types import CNIError, convert_result

    if result.get("cniVersion") not in ("1.0.0", "1.1.0"):
        with contextlib.suppress(CNIError, KeyError, ValueError, TypeError):  # show what an odd result has
            result = convert_result(result, "1.0.0")
    ifaces = result.get("interfaces") or []
    rows = []
    for ip in result.get("ips") or []:
        idx = ip.get("interface")
        iface = ifaces[idx] if isinstance(idx, int) and 0 <= idx < len(ifaces) else {}
        rows.append({"interface": iface.get("name", ""), "address": ip.get("address"),
                     "gateway": ip.get("gateway", ""), "mac": iface.get("mac", ""),
                     "sandbox": iface.get("sandbox", "")})
    return rows


def render_trace(network: str, command: str, steps: list[TraceStep]) -> None:
    """The chain as a rich tree on stderr (stdout stays the result, so pipes keep working)."""
    import json

    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    total = sum(s.seconds for s in steps) * 1000
    tree = Tree(f"[bold]{command}[/bold] {network}  [dim]{total:.1f} ms[/dim]")
    for s in steps:
        ok = "[green]ok[/green]" if s.error is None else "[red]failed[/red]"
        node = tree.add(f"{s.plugin}  {ok}  [dim]{s.seconds * 1000:.1f} ms[/dim]")
        if s.error is not None:
            node.add(Text(s.error.message, style="red", overflow="fold"))
        elif s.result is not None:
            node.add(Text(json.dumps(s.result, separators=(",", ":")), overflow="fold"))
    Console(stderr=True, width=None if sys.stderr.isatty() else 4096).print(tree)


def _run(network: str, command: str, trace: bool, fn: Any) -> Any:
    steps: list[TraceStep] | None = [] if trace else None
    try:
        return fn(steps)
    finally:
        if steps is not None:
            render_trace(network, command, steps)


@app.command("add")
def add(
    network: NetworkArg,
    netns: NetnsArg,
    conf_dir: ConfDirOpt = DEFAULT_CONF_DIR,
    cni_path: CniPathOpt = DEFAULT_CNI_PATH,
    ifname: IfnameOpt = "eth0",
    args: ArgsOpt = "",
    cap_args: CapArgsOpt = "",
    container_id: ContainerIdOpt = "",
    cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    output: AddOutputOpt = Format.json,
    trace: TraceOpt = False,
) -> None:
    """Attach NETNS to NETWORK: run the chain's ADD and print the result (cnitool add)."""
    from k8sx.cli.output import dump_json, render

    netconf = _load(network, conf_dir)
    rt = runtime_conf(netns, ifname, args, cap_args, container_id, cache_dir)
    result = _run(network, "ADD", trace, lambda steps: _runner(cni_path, cache_dir, steps).add_network(netconf, rt))
    if output is Format.json:
        sys.stdout.write(dump_json(result, indent=4) + "\n")
    elif output is Format.table:
        render(result_rows(result), Format.table, COLUMNS)
    else:
        render(result, output)


@app.command("check")
def check(
    network: NetworkArg,
    netns: NetnsArg,
    conf_dir: ConfDirOpt = DEFAULT_CONF_DIR,
    cni_path: CniPathOpt = DEFAULT_CNI_PATH,
    ifname: IfnameOpt = "eth0",
    args: ArgsOpt = "",
    cap_args: CapArgsOpt = "",
    container_id: ContainerIdOpt = "",
    cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    trace: TraceOpt = False,
) -> None:
    """Check NETNS's attachment to NETWORK against the cached ADD result (cnitool check); silent when fine."""
    netconf = _load(network, conf_dir)
    rt = runtime_conf(netns, ifname, args, cap_args, container_id, cache_dir)
    _run(network, "CHECK", trace, lambda steps: _runner(cni_path, cache_dir, steps).check_network(netconf, rt))


@app.command("del")
def delete(
    network: NetworkArg,
    netns: NetnsArg,
    conf_dir: ConfDirOpt = DEFAULT_CONF_DIR,
    cni_path: CniPathOpt = DEFAULT_CNI_PATH,
    ifname: IfnameOpt = "eth0",
    args: ArgsOpt = "",
    cap_args: CapArgsOpt = "",
    container_id: ContainerIdOpt = "",
    cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    trace: TraceOpt = False,
) -> None:
    """Detach NETNS from NETWORK: the chain's DEL in reverse order (cnitool del); silent when done.

    The netns may already be gone: DEL still releases what the plugins hold (addresses, rules).
    """
    netconf = _load(network, conf_dir)
    rt = runtime_conf(netns, ifname, args, cap_args, container_id, cache_dir, must_exist=False)
    _run(network, "DEL", trace, lambda steps: _runner(cni_path, cache_dir, steps).del_network(netconf, rt))
