"""Output formatting for every command, in one place (as crictl keeps its in one shared file).

Commands hand over plain data: a list of row dicts for listings, or any JSON-able object for
``inspect``-style output. ``-o table|json|yaml`` (and ``-q`` ids only) mean the same everywhere.
rich is imported only when a table is drawn, so machine-readable output stays cheap.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer


class Format(StrEnum):
    """The values of ``-o/--output``."""

    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[Format, typer.Option("--output", "-o", help="Output format.")]


class DocFormat(StrEnum):
    """``-o/--output`` of commands that print manifests (no table form): ``crd generate|convert``."""

    yaml = "yaml"
    json = "json"


DocOutputOpt = Annotated[DocFormat, typer.Option("--output", "-o", help="Manifest format.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print names or ids.")]


def dump_json(obj: Any, indent: int = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=False, default=str)


_EMPTY_OBJECT = re.compile(r"^( *)(.*)\{\}(,?)$", re.MULTILINE)


def dump_json_pb(obj: Any) -> str:
    """JSON as Go's jsonpb indents a protobuf message (crictl's ``ps``/``pods``/``stats -o json``): as
    :func:`dump_json`, but an empty map opens and closes on two lines (``{`` then ``}`` under its key)."""
    return _EMPTY_OBJECT.sub(lambda m: f"{m[1]}{m[2]}{{\n{m[1]}}}{m[3]}", dump_json(obj))


def dump_yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")  # go-yaml's isBase60Float


def dump_yaml_go(obj: Any) -> str:
    """YAML as Go tools print it through sigs.k8s.io/yaml (crictl, kubectl): sorted keys, ``"double"`` quotes."""
    import yaml

    class GoDumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # go-yaml double-quotes a string that would read back as another type ("12", "", "true",
        # a timestamp); anything else is left to the emitter (plain, or single quotes when needed).
        implicit = dumper.resolve(yaml.ScalarNode, value, (True, False))
        # go-yaml also quotes y/Y/n/N (booleans to it) and base-60 look-alikes ("00:00:5e:00:53:01")
        quote = implicit != "tag:yaml.org,2002:str" or value in ("y", "Y", "n", "N") or _BASE60.match(value)
        style = '"' if quote else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    GoDumper.add_representer(str, represent_str)
    return yaml.dump(obj, Dumper=GoDumper, sort_keys=True, default_flow_style=False, allow_unicode=True)


def render(
    data: Any,
    fmt: Format | str = Format.table,
    columns: Sequence[tuple[str, str]] | None = None,
    quiet_key: str | None = None,
    quiet: bool = False,
) -> None:
    """Print ``data`` in ``fmt``.

    ``columns`` is a list of (row key, header) for tables of row dicts; with ``quiet``, only the
    value of ``quiet_key`` of each row is printed, one per line (crictl's ``-q``).
    """
    fmt = Format(fmt)
    out = sys.stdout
    if quiet and quiet_key is not None:
        for row in data:
            out.write(f"{row[quiet_key]}\n")
        return
    if fmt is Format.json:
        out.write(dump_json(data) + "\n")
    elif fmt is Format.yaml:
        out.write(dump_yaml(data))
    elif columns is None:
        out.write(dump_json(data) + "\n")
    else:
        table(data, columns)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """A borderless table in crictl's style: upper-case headers, columns padded with spaces."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD if sys.stdout.isatty() else None, show_edge=False, pad_edge=False,
              header_style="bold" if sys.stdout.isatty() else "")
    for _, header in columns:
        t.add_column(header.upper(), no_wrap=True, overflow="fold")
    for row in rows:
        t.add_row(*("" if row.get(key) is None else str(row.get(key)) for key, _ in columns))
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 4096).print(t)


def go_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], minwidth: int = 20,
             padding: int = 3) -> None:
    """A table exactly as crictl prints it (Go's text/tabwriter with minwidth 20, padding 3).

    Every column but the last is padded to max(longest cell + padding, minwidth); the last is not
    padded. Byte-identical output lets people diff k8sx against crictl and keep their awk scripts.
    """
    lines = [[header for _, header in columns]]
    lines += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(minwidth, max(len(line[i]) for line in lines) + padding) for i in range(len(columns) - 1)]
    out = sys.stdout
    for line in lines:
        out.write("".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + line[-1] + "\n")


def error(message: str) -> None:
    sys.stderr.write(f"Error: {message}\n")
