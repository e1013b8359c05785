"""``k8sx flannel leases``: the subnet leases in the store, as a table, JSON or YAML."""

from __future__ import annotations

from k8sx.cli.flannel import app
from k8sx.cli.flannel.common import (
    DEFAULT_ENDPOINTS,
    DEFAULT_PREFIX,
    EtcdEndpointsOpt,
    EtcdPrefixOpt,
    KubeSubnetMgrOpt,
    LeaseFileOpt,
    NetConfigFileOpt,
    NodeNameOpt,
    open_store,
)
from k8sx.cli.kubeflags import kube_command
from k8sx.cli.output import Format, OutputOpt
from k8sx.kube import KubeConnection

COLUMNS = [("subnet", "subnet"), ("publicIP", "public ip"), ("backendType", "backend"),
           ("backendData", "backend data"), ("expires", "expires")]


@app.command("leases")
@kube_command
def leases(
    etcd_endpoints: EtcdEndpointsOpt = DEFAULT_ENDPOINTS,
    etcd_prefix: EtcdPrefixOpt = DEFAULT_PREFIX,
    kube_subnet_mgr: KubeSubnetMgrOpt = False,
    node_name: NodeNameOpt = None,
    net_config_file: NetConfigFileOpt = None,
    lease_file: LeaseFileOpt = None,
    output: OutputOpt = Format.table,
    *,
    kube: KubeConnection,
) -> None:
    """List the subnet leases held in the store (etcd, the Kubernetes API or the local file)."""
    import json

    from k8sx.cli.output import render
    from k8sx.flannel.subnet import describe_leases

    store = open_store(kube, kube_subnet_mgr, node_name, lease_file, net_config_file, etcd_endpoints, etcd_prefix)
    rows = describe_leases(store.with_expiry(store.leases()[0]))
    if output is Format.table:
        for row in rows:
            row["backendData"] = "" if row["backendData"] is None else json.dumps(row["backendData"],
                                                                                   separators=(",", ":"))
            row["expires"] = row["expires"] or ""
    render(rows, output, COLUMNS)
