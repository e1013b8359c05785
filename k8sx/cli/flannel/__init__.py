"""The ``k8sx flannel`` group: the node agent and its status and lease views.

Commands register themselves on ``app``; a verb that is not built yet does not exist here yet.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="flannel: subnet leases (etcd, Kubernetes, local) and the udp, vxlan and host-gw backends.",
    no_args_is_help=True,
)

from k8sx.cli.flannel import leases, run, status  # noqa: E402,F401  (verbs register themselves on app)
