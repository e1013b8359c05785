"""The lease-store options every ``k8sx flannel`` verb shares (flanneld's flag names), declared once.

Why: ``run``, ``status`` and ``leases`` must open the same store from the same flags, and a second
copy of ``--etcd-endpoints`` or ``--kube-subnet-mgr`` would drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from k8sx.flannel.leases import LeaseStore
    from k8sx.kube import KubeConnection

_PANEL = "Lease store"
EtcdEndpointsOpt = Annotated[str, typer.Option(
    "--etcd-endpoints", envvar="FLANNELD_ETCD_ENDPOINTS", rich_help_panel=_PANEL,
    help="Comma-separated etcd endpoints (v3 API over http).")]
EtcdPrefixOpt = Annotated[str, typer.Option(
    "--etcd-prefix", envvar="FLANNELD_ETCD_PREFIX", rich_help_panel=_PANEL,
    help="etcd prefix holding config and subnets/.")]
KubeSubnetMgrOpt = Annotated[bool, typer.Option(
    "--kube-subnet-mgr", envvar="FLANNELD_KUBE_SUBNET_MGR", rich_help_panel=_PANEL,
    help="Use the Kubernetes API (Node podCIDR and annotations) instead of etcd.")]
NodeNameOpt = Annotated[str | None, typer.Option(
    "--node-name", envvar="NODE_NAME", rich_help_panel=_PANEL,
    help="This node's Node name for --kube-subnet-mgr (default: $NODE_NAME, else the hostname).")]
LeaseFileOpt = Annotated[str | None, typer.Option(
    "--lease-file", rich_help_panel=_PANEL,
    help="Keep leases in this local JSON file (a single node, no etcd or API server); needs --net-config-file.")]
NetConfigFileOpt = Annotated[str | None, typer.Option(
    "--net-config-file", "--net-config-path", rich_help_panel=_PANEL,
    help="Read net-conf.json from this file (kube default /etc/kube-flannel/net-conf.json; "
         "with etcd it replaces <prefix>/config).")]
SubnetFileOpt = Annotated[str, typer.Option(
    "--subnet-file", envvar="FLANNELD_SUBNET_FILE", help="Where to write (or read) subnet.env.")]
IfaceOpt = Annotated[str | None, typer.Option(
    "--iface", envvar="FLANNELD_IFACE",
    help="Interface (name or address) between nodes; default: the default route's.")]
PublicIpOpt = Annotated[str | None, typer.Option(
    "--public-ip", envvar="FLANNELD_PUBLIC_IP",
    help="IP other nodes reach this one at (default: --iface's address).")]

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"


def open_store(kube: KubeConnection, kube_subnet_mgr: bool, node_name: str | None, lease_file: str | None,
               net_config_file: str | None, etcd_endpoints: str, etcd_prefix: str) -> LeaseStore:
    from k8sx.errors import UsageError
    from k8sx.flannel.leases import open_store as open_

    if kube_subnet_mgr and lease_file:
        raise UsageError("--kube-subnet-mgr and --lease-file choose different stores: pick one")
    return open_(kube=kube if kube_subnet_mgr else None, node_name=node_name, lease_file=lease_file,
                 net_config_file=net_config_file, etcd_endpoints=etcd_endpoints, etcd_prefix=etcd_prefix)
