"""The one typer app behind ``k8sx`` and ``kubectl x``: the root command and its groups.

Each group lives in its own module and imports only typer at module level; anything heavy (grpc,
kubernetes, pyroute2) is imported inside the command that needs it, so ``k8sx --help`` stays fast.
"""

from __future__ import annotations

import typer

import k8sx
from k8sx.cli import cni, completion, crd, flannel, operator, runtime

app = typer.Typer(
    name="k8sx",
    help="k8sx: one toolkit for the Kubernetes node and API extensions: a CRI runtime and client, "
    "a CNI runner and plugins, flannel, CRD tools and operator scaffolding.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help and usage errors: typer's rich formatting imports rich's markdown, syntax and
    # traceback modules (~80 ms), which alone would break the 0.2 s budget of `k8sx --help`.
    # rich still draws tables, trees and progress bars, imported by the commands that print them.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


app.add_typer(runtime.app, name="runtime")
app.add_typer(cni.app, name="cni")
app.add_typer(flannel.app, name="flannel")
app.add_typer(crd.app, name="crd")
app.add_typer(operator.app, name="operator")
app.add_typer(completion.app, name="completion")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"k8sx {k8sx.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_version),
) -> None:
    """k8sx: one toolkit for the Kubernetes node and API extensions."""
