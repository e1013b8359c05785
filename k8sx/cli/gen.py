"""Regenerate what is derived from the typer app: the command tree and the completion scripts.

``python -m k8sx.cli.gen`` writes ``k8sx/cli/tree.json`` and ``completions/``; ``--check`` only
compares and exits 1 when something is stale (the test suite runs it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
import typer

from k8sx.cli import scripts, tree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPLETIONS = os.path.join(REPO, "completions")


def build(app: typer.Typer) -> dict[str, Any]:
    """The tree of ``app`` as plain data (see ``tree.py`` for the shape)."""
    return _node(typer.main.get_command(app))


def _node(cmd: Any) -> dict[str, Any]:
    options, args = [], []
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        choices = _choices(p)
        if p.param_type_name == "option":
            options.append({
                "names": sorted(p.opts + p.secondary_opts, key=lambda n: (n.startswith("--"), n)),
                "help": _first_line(p.help or ""),
                "value": not p.is_flag,
                "choices": choices,
            })
        else:
            args.append({"name": (p.name or "").upper(), "choices": choices, "nargs": p.nargs})
    options.append({"names": ["-h", "--help"], "help": "Show help and exit.", "value": False, "choices": None})
    commands = {}
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                commands[name] = _node(sub)
    return {"help": _first_line(cmd.short_help or cmd.help or ""), "options": options, "args": args,
            "commands": commands}


def _choices(param: Any) -> list[str] | None:
    desc = getattr(param, "type_descriptor", None)
    found = getattr(desc, "choices", None)
    if found is None:
        found = getattr(getattr(param, "type", None), "choices", None)
    return None if found is None else [str(getattr(c, "value", c)) for c in found]


def _first_line(text: str) -> str:
    return text.strip().split("\n\n")[0].replace("\n", " ")


def expected() -> dict[str, str]:
    """Every generated file, by absolute path, with the content it should have."""
    from k8sx.cli.main import app

    files = {tree.TREE_FILE: json.dumps(build(app), indent=1, sort_keys=True) + "\n"}
    for shell in scripts.SHELLS:
        files[os.path.join(COMPLETIONS, scripts.file_name(shell))] = scripts.script(shell)
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, content in expected().items():
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != content:
            stale.append(os.path.relpath(path, REPO))
            if not check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(content)
    if stale:
        print(("stale: " if check else "wrote: ") + ", ".join(stale) +
              (" (run: python -m k8sx.cli.gen)" if check else ""))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
