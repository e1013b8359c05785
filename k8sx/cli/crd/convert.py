"""``kubectl x crd convert FILE...|--from-cluster``: v1beta1 CRDs rewritten as apiextensions.k8s.io/v1.

Old manifests stopped applying in Kubernetes 1.22. This prints every document of the inputs
with the v1beta1 CRDs converted (others unchanged; ``--from-cluster`` reads the cluster's CRDs that
still carry v1beta1's ``preserveUnknownFields: true``), says on stderr what it assumed (warnings)
and what a person has to finish (needs a human), then runs the offline validator on the result:
exit 1 if a converted CRD still breaks a server rule, 0 otherwise.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.crd import app
from k8sx.cli.kubeflags import kube_command
from k8sx.cli.output import DocFormat, DocOutputOpt
from k8sx.kube import KubeConnection

FilesArg = Annotated[list[str] | None, typer.Argument(metavar="FILE...", help="YAML/JSON files ('-' = stdin).")]


@app.command("convert")
@kube_command
def convert(
    files: FilesArg = None,
    *,
    kube: KubeConnection,
    from_cluster: Annotated[bool, typer.Option("--from-cluster", help="Convert the cluster's CRDs that still "
                                               "carry preserveUnknownFields: true (created as v1beta1).")] = False,
    output: DocOutputOpt = DocFormat.yaml,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No warnings, only what needs a human.")] = False,
) -> None:
    """Convert v1beta1 CRDs to v1 (multi-document YAML; other documents pass through)."""
    from k8sx.crd.convert import convert_documents
    from k8sx.crd.documents import Document, dump, load_files
    from k8sx.crd.validate import validate_crd
    from k8sx.errors import UsageError

    if bool(files) == from_cluster:
        raise UsageError("give FILE... or --from-cluster (one of them)")
    if from_cluster:
        from k8sx.crd.cluster import list_crds

        docs = [Document(c, f"<cluster>/{(c.get('metadata') or {}).get('name')}") for c in list_crds(kube)
                if (c.get("spec") or {}).get("preserveUnknownFields") is True]
        if not docs:
            sys.stderr.write("no CRD of the cluster carries preserveUnknownFields: true\n")
            return
    else:
        docs = load_files(files or [])
    result = convert_documents(docs)
    for note in result.notes:
        if not (quiet and note.kind == "warning"):
            sys.stderr.write(f"{note}\n")
    failed = 0
    for doc in result.docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            errors = [p for p in validate_crd(doc) if p.severity == "error"]
            name = (doc.get("metadata") or {}).get("name", "?")
            for p in errors:
                p.where = f"<converted {name}>"
                sys.stderr.write(f"{p}\n")
            failed += bool(errors)
    sys.stdout.write(dump(result.docs, output.value))
    if not quiet:
        sys.stderr.write(f"converted {result.converted} CRD(s) of {len(result.docs)} document(s)\n")
    if failed:
        sys.stderr.write(f"Error: {failed} CRD(s) still break API-server rules after conversion\n")
        raise typer.Exit(1)
