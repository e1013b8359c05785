"""How the operator verbs report what a generator did: one line per file, grouped by what happened."""

from __future__ import annotations

import sys
from typing import Any


def report(result: Any) -> None:
    for label, paths, why in (("created", result.created, ""), ("updated", result.updated, ""),
                              ("kept", result.kept, " (yours: not overwritten)")):
        for path in paths:
            sys.stdout.write(f"{label:>8}  {path}{why}\n")
    for note in result.notes:
        sys.stdout.write(f"note: {note}\n")
