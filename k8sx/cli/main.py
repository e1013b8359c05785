"""The one typer app behind ``k8sx`` and ``kubectl x``: the root command and its groups.

The root imports a group (``k8sx.cli.<group>``, with all its verbs) only when that group is used,
and lists the groups from the generated command tree: ``k8sx --help`` and ``k8sx cni ...`` then
never pay for the other groups' modules. Within a group, anything heavy (grpc, kubernetes,
pyroute2) is imported inside the command that needs it.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import click
import typer
from typer.core import TyperGroup

import k8sx

GROUPS = ("runtime", "cni", "flannel", "crd", "operator", "completion")


class LazyGroups(TyperGroup):
    """The root command: its groups are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return group_command(cmd_name) if cmd_name in GROUPS else None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:  # typer suggests from self.commands, which stays empty here
            matches = difflib.get_close_matches(args[0], GROUPS) if args else []
            if matches and "Did you mean" not in e.message:
                e.message = f"{e.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from k8sx.cli import tree

        nodes = tree.load()["commands"]
        limit = formatter.width - 6 - max(len(name) for name in GROUPS)
        rows = [(name, _short(nodes.get(name, {}).get("help", ""), limit)) for name in GROUPS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def group_command(name: str) -> click.Command:
    """The click command of group ``name`` (imports ``k8sx.cli.<name>``).

    Built through a throw-away parent, so typer treats it exactly as an ``add_typer`` sub-group:
    plain help, no completion options of typer's, and a group even before it has verbs.
    """
    module = importlib.import_module(f"k8sx.cli.{name}")
    parent = typer.Typer(add_completion=False, rich_markup_mode=None)
    parent.callback()(_parent)
    parent.add_typer(module.app, name=name)
    return typer.main.get_command(parent).commands[name]  # type: ignore[attr-defined]


def _parent() -> None:
    """Only holds the group being built."""


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)].rsplit(" ", 1)[0] + "..."

app = typer.Typer(
    cls=LazyGroups,
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
