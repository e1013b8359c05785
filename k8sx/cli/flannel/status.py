"""``k8sx flannel status``: this node's lease, its peers, and the routes programmed against expected."""

from __future__ import annotations

from k8sx.cli.flannel import app
from k8sx.cli.flannel.common import (
    DEFAULT_ENDPOINTS,
    DEFAULT_PREFIX,
    DEFAULT_SUBNET_FILE,
    EtcdEndpointsOpt,
    EtcdPrefixOpt,
    IfaceOpt,
    KubeSubnetMgrOpt,
    LeaseFileOpt,
    NetConfigFileOpt,
    NodeNameOpt,
    PublicIpOpt,
    SubnetFileOpt,
    open_store,
)
from k8sx.cli.kubeflags import kube_command
from k8sx.cli.output import Format, OutputOpt
from k8sx.kube import KubeConnection

COLUMNS = [("subnet", "subnet"), ("peer", "peer"), ("via", "via"), ("dev", "dev"), ("state", "state"),
           ("kernel", "kernel has")]


@app.command("status")
@kube_command
def status(
    iface: IfaceOpt = None,
    public_ip: PublicIpOpt = None,
    etcd_endpoints: EtcdEndpointsOpt = DEFAULT_ENDPOINTS,
    etcd_prefix: EtcdPrefixOpt = DEFAULT_PREFIX,
    kube_subnet_mgr: KubeSubnetMgrOpt = False,
    node_name: NodeNameOpt = None,
    subnet_file: SubnetFileOpt = DEFAULT_SUBNET_FILE,
    net_config_file: NetConfigFileOpt = None,
    lease_file: LeaseFileOpt = None,
    output: OutputOpt = Format.table,
    *,
    kube: KubeConnection,
) -> None:
    """Show this node's lease, its peers and each expected route against the kernel's (exit 1 if any is off)."""
    import typer

    from k8sx.cli.output import render
    from k8sx.flannel.status import status as node_status

    store = open_store(kube, kube_subnet_mgr, node_name, lease_file, net_config_file, etcd_endpoints, etcd_prefix)
    doc = node_status(store, subnet_file, iface, public_ip)
    bad = [r for r in doc["routes"] if r["state"] != "programmed"]
    if output is not Format.table:
        render(doc, output)
    else:
        from rich.console import Console

        console = Console(soft_wrap=True)
        node = doc["node"]
        if node is None:
            console.print(f"[red]no lease for this node[/red] in network {doc['network']} ({doc['backend']})")
        else:
            console.print(f"[bold]lease[/bold] {node['subnet']}  public ip {node['publicIP']}  "
                          f"backend {doc['backend']}  mtu {node['mtu']}  network {doc['network']}")
        console.print(f"[bold]peers[/bold] {len(doc['peers'])}   [bold]routes[/bold] "
                      f"{len(doc['routes']) - len(bad)}/{len(doc['routes'])} programmed")
        render(doc["routes"], Format.table, COLUMNS)
    if bad or doc["node"] is None:
        raise typer.Exit(1)
