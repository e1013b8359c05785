"""The console scripts ``k8sx``, ``kubectl-x`` and ``kubectl_complete-x``.

This module is the start-up path of every invocation, so it imports nothing but the standard
library at module level: a completion request is answered from the generated command tree without
ever importing typer or rich, and only a real command loads the typer app.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """``k8sx``: a completion request (from the scripts in completions/) or a command."""
    if os.environ.get("_K8SX_COMPLETE"):
        from k8sx.cli import complete

        return complete.run_from_env()
    return run(sys.argv[1:] if argv is None else argv, prog_name="k8sx")


def kubectl_main(argv: list[str] | None = None) -> int:
    """``kubectl-x``: the same app as a kubectl plugin, so usage and help say ``kubectl x``."""
    return run(sys.argv[1:] if argv is None else argv, prog_name="kubectl x")


def kubectl_complete(argv: list[str] | None = None) -> int:
    """``kubectl_complete-x``: kubectl's plugin-completion protocol (cobra's ``__complete`` output)."""
    from k8sx.cli import complete

    return complete.run_cobra(sys.argv[1:] if argv is None else argv)


def run(args: list[str], prog_name: str) -> int:
    """Run the typer app; turn k8sx's own errors into one line on stderr and their exit status."""
    from k8sx.cli import tree

    args = tree.hoist_kube_flags(tree.load(), args)
    from k8sx.cli.main import app
    from k8sx.errors import K8sxError

    try:
        app(args=args, prog_name=prog_name)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except K8sxError as e:
        sys.stderr.write(f"Error: {e.message}\n")
        if e.hint:
            sys.stderr.write(f"Hint: {e.hint}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
