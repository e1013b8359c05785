"""``kubectl x crd ls``: the CRDs installed in the cluster, with their served and storage versions."""

from __future__ import annotations

from k8sx.cli.crd import app
from k8sx.cli.kubeflags import kube_command
from k8sx.cli.output import Format, OutputOpt, QuietOpt, render
from k8sx.kube import KubeConnection

COLUMNS = [("name", "name"), ("kind", "kind"), ("scope", "scope"), ("versions", "versions"),
           ("storage", "storage"), ("established", "established")]


@app.command("ls")
@kube_command
def ls(
    *,
    kube: KubeConnection,
    output: OutputOpt = Format.table,
    quiet: QuietOpt = False,
) -> None:
    """List the cluster's CRDs: kind, scope, served versions, the storage version, Established."""
    from k8sx.crd import cluster

    crds = cluster.list_crds(kube)
    if output is not Format.table:
        render(crds, output)
        return
    render([cluster.summarize(c) for c in crds], output, COLUMNS, quiet_key="name", quiet=quiet)
