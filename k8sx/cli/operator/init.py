"""``k8sx operator init``: a new kopf operator project (kubebuilder init for Python)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.operator import app


@app.command("init")
def init(
    domain: Annotated[str, typer.Option("--domain", help="Domain of the API groups (<group>.<domain>), "
                                        "e.g. example.com.")],
    repo: Annotated[str | None, typer.Option("--repo", help="Project name: the distribution, the Python package "
                                             "(with '_') and the Kubernetes objects (default: the directory's "
                                             "name).")] = None,
    directory: Annotated[str, typer.Option("--dir", help="Where to create the project (created if missing).")
                         ] = ".",
) -> None:
    """Create an operator project: manager with leader election and /metrics, Dockerfile, Makefile, tests."""
    from k8sx.cli.operator.render import report
    from k8sx.operator.scaffold import init as do_init

    result = do_init(directory, domain, repo)
    report(result)
    sys.stdout.write(f"next: k8sx operator create api --dir {directory} --group GROUP --version v1 --kind Kind\n")
