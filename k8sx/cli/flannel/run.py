"""``k8sx flannel run``: the node agent, with flanneld's main flags (thin: the loop is k8sx.flannel.agent)."""

from __future__ import annotations

from typing import Annotated

import typer

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
from k8sx.kube import KubeConnection

IpMasqOpt = Annotated[bool, typer.Option("--ip-masq", envvar="FLANNELD_IP_MASQ",
                                         help="Masquerade traffic leaving the flannel network (FLANNEL-POSTRTG).")]
ForwardOpt = Annotated[bool, typer.Option("--iptables-forward-rules/--no-iptables-forward-rules",
                                          help="Accept forwarded traffic of the flannel network (FLANNEL-FWD).")]
ResyncOpt = Annotated[float, typer.Option("--iptables-resync", help="Seconds between checks of the iptables rules.")]
RenewOpt = Annotated[float, typer.Option("--subnet-lease-renew-margin",
                                         help="Renew the lease this many minutes before it expires.")]


@app.command("run")
@kube_command
def run(
    iface: IfaceOpt = None,
    public_ip: PublicIpOpt = None,
    ip_masq: IpMasqOpt = False,
    etcd_endpoints: EtcdEndpointsOpt = DEFAULT_ENDPOINTS,
    etcd_prefix: EtcdPrefixOpt = DEFAULT_PREFIX,
    kube_subnet_mgr: KubeSubnetMgrOpt = False,
    node_name: NodeNameOpt = None,
    subnet_file: SubnetFileOpt = DEFAULT_SUBNET_FILE,
    net_config_file: NetConfigFileOpt = None,
    lease_file: LeaseFileOpt = None,
    iptables_forward_rules: ForwardOpt = True,
    iptables_resync: ResyncOpt = 5.0,
    subnet_lease_renew_margin: RenewOpt = 60.0,
    *,
    kube: KubeConnection,
) -> None:
    """Run the flannel agent on this node (foreground; SIGTERM stops it and leaves the routes in place)."""
    import logging
    import signal

    from k8sx.flannel.agent import Agent, AgentOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    store = open_store(kube, kube_subnet_mgr, node_name, lease_file, net_config_file, etcd_endpoints, etcd_prefix)
    agent = Agent(store, AgentOptions(iface=iface, public_ip=public_ip, ip_masq=ip_masq, subnet_file=subnet_file,
                                      iptables_forward_rules=iptables_forward_rules, iptables_resync=iptables_resync,
                                      renew_margin=subnet_lease_renew_margin * 60))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    code = agent.run()
    if code:
        raise typer.Exit(code)
