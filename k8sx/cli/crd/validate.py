"""``kubectl x crd validate FILE...``: the API server's CRD rules, offline, with file:line.

A CRD can pass generic schema validators and still be refused by the API server (name not
``<plural>.<group>``, a schema that is not structural, ``uniqueItems: true``, a bad printer-column
type...). This reports each such problem as ``file:line: [rule] path: message`` and exits 1 if
any CRD is invalid (warnings alone exit 0); ``--list-rules`` prints the rules it knows.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from k8sx.cli.crd import app
from k8sx.cli.output import Format, OutputOpt, QuietOpt, render

FilesArg = Annotated[list[str] | None, typer.Argument(metavar="FILE...", help="YAML/JSON files ('-' = stdin).")]


@app.command("validate")
def validate(
    files: FilesArg = None,
    output: OutputOpt = Format.table,
    quiet: QuietOpt = False,
    list_rules: Annotated[bool, typer.Option("--list-rules", help="Print the rules and exit.")] = False,
) -> None:
    """Check CRDs against the API server's rules without a cluster (exit 1 if any is invalid)."""
    from k8sx.crd.documents import load_files
    from k8sx.crd.validate import RULES, validate_documents
    from k8sx.errors import UsageError

    if list_rules:
        render([{"rule": k, "checks": v} for k, v in RULES.items()], output, [("rule", "rule"), ("checks", "checks")])
        return
    if not files:
        raise UsageError("no FILE given (use '-' for stdin)")
    docs = load_files(files)
    problems = validate_documents(docs)
    errors = [p for p in problems if p.severity == "error"]
    if output is Format.table:
        for p in problems:
            if not (quiet and p.severity != "error"):
                sys.stdout.write(f"{p}\n")
        if not quiet:
            sys.stderr.write(f"{len(docs)} document(s), {len(errors)} error(s), "
                             f"{len(problems) - len(errors)} warning(s)\n" if problems else
                             f"{len(docs)} document(s) valid\n")
    else:
        render([{"where": p.where, "severity": p.severity, "rule": p.rule, "path": p.dotted(),
                 "message": p.message} for p in problems], output)
    if errors:
        raise typer.Exit(1)
