"""``k8sx cni ls|version|status|gc``: what the node's CNI configuration holds and asks for.

Why: cnitool only attaches and detaches; an operator also needs to see which networks the
configuration directory defines (and which file is broken), which spec versions the plugins speak,
and spec 1.1's STATUS and GC, which no reference tool offers.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.cni import app
from k8sx.cli.cni.attach import NetworkArg
from k8sx.cli.cni.common import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CNI_PATH,
    DEFAULT_CONF_DIR,
    CacheDirOpt,
    CniPathOpt,
    ConfDirOpt,
    IfnameOpt,
)
from k8sx.cli.output import Format
from k8sx.errors import UsageError

ListOutputOpt = Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml.")]
OptionalNetworkArg = Annotated[str | None, typer.Argument(
    help="Network whose plugins to ask (default: only k8sx's own versions).", metavar="NETWORK")]
ValidOpt = Annotated[list[str] | None, typer.Option(
    "--valid", help="An attachment to keep: CONTAINERID[:IFNAME] (repeatable; IFNAME defaults to --ifname).")]


@app.command("ls")
def ls(conf_dir: ConfDirOpt = DEFAULT_CONF_DIR, output: ListOutputOpt = Format.table) -> None:
    """List the networks of the configuration directory, in libcni's load order (broken files too)."""
    from k8sx.cli.output import render
    from k8sx.cni.conf import list_networks

    rows = []
    for entry in list_networks(conf_dir):
        net = entry.network
        rows.append({
            "name": net.name if net else "",
            "cniVersion": net.cni_version if net else "",
            "plugins": ",".join(net.types) if net else "",
            "file": entry.path,
            "error": entry.error or "",
        })
    columns = [("name", "name"), ("cniVersion", "version"), ("plugins", "plugins"), ("file", "file")]
    if any(r["error"] for r in rows):
        columns.append(("error", "error"))
    render(rows, output, columns)


@app.command("version")
def version(
    network: OptionalNetworkArg = None,
    conf_dir: ConfDirOpt = DEFAULT_CONF_DIR,
    cni_path: CniPathOpt = DEFAULT_CNI_PATH,
    output: ListOutputOpt = Format.table,
) -> None:
    """The spec versions k8sx speaks; with NETWORK, each plugin's VERSION answer and whether it fits."""
    from k8sx.cli.output import render
    from k8sx.cni.conf import load_network
    from k8sx.cni.runner import Runner
    from k8sx.cni.types import CURRENT_VERSION, SUPPORTED_VERSIONS, CNIError

    rows = [{"component": "k8sx runner", "cniVersion": CURRENT_VERSION,
             "supportedVersions": ",".join(SUPPORTED_VERSIONS), "fits": ""}]
    failed = False
    if network:
        netconf = load_network(network, conf_dir)
        runner = Runner(cni_path)
        want = netconf.cni_version or "0.1.0"
        for plugin in netconf.plugins:
            try:
                info = runner.version_info(plugin.type, want)
                supported = info.get("supportedVersions", [])
                fits = "yes" if want in supported else f"no (network is {want})"
                rows.append({"component": plugin.type, "cniVersion": info.get("cniVersion", ""),
                             "supportedVersions": ",".join(supported), "fits": fits})
            except CNIError as e:
                rows.append({"component": plugin.type, "cniVersion": "", "supportedVersions": "",
                             "fits": f"no: {e.message}"})
            failed = failed or not rows[-1]["fits"].startswith("yes")
    render(rows, output, [("component", "component"), ("cniVersion", "cniVersion"),
                          ("supportedVersions", "supported versions"), ("fits", "fits network")])
    if failed:
        raise typer.Exit(1)


@app.command("status")
def status(
    network: NetworkArg,
    conf_dir: ConfDirOpt = DEFAULT_CONF_DIR,
    cni_path: CniPathOpt = DEFAULT_CNI_PATH,
) -> None:
    """Ask every plugin of NETWORK whether it can take ADDs (spec 1.1 STATUS); non-zero when not."""
    from k8sx.cni.conf import load_network
    from k8sx.cni.runner import Runner

    netconf = load_network(network, conf_dir)
    if Runner(cni_path).get_status(netconf):
        sys.stdout.write(f"{netconf.name}: ready\n")
    else:
        sys.stdout.write(f"{netconf.name}: ready (cniVersion {netconf.cni_version or '0.1.0'} predates STATUS; "
                         "plugins not asked)\n")


@app.command("gc")
def gc(
    network: NetworkArg,
    valid: ValidOpt = None,
    conf_dir: ConfDirOpt = DEFAULT_CONF_DIR,
    cni_path: CniPathOpt = DEFAULT_CNI_PATH,
    ifname: IfnameOpt = "eth0",
    cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    output: ListOutputOpt = Format.table,
) -> None:
    """Spec 1.1 GC: DEL every cached attachment of NETWORK not given with --valid, then GC the plugins."""
    from k8sx.cli.output import render
    from k8sx.cni.conf import load_network
    from k8sx.cni.runner import Runner

    keep = []
    for item in valid or []:
        cid, _, ifn = item.partition(":")
        if not cid:
            raise UsageError(f"--valid {item!r}: expected CONTAINERID[:IFNAME]")
        keep.append((cid, ifn or ifname))
    netconf = load_network(network, conf_dir)
    removed = Runner(cni_path, cache_dir=cache_dir).gc(netconf, keep)
    render([{"containerId": e.container_id, "ifname": e.ifname, "netns": e.netns} for e in removed], output,
           [("containerId", "removed container id"), ("ifname", "ifname"), ("netns", "netns")])
