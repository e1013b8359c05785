"""Shell completion without typer: one engine, four output formats (bash, zsh, fish, kubectl/cobra).

Why not typer's own completion: it imports typer and rich (~0.2 s) on every TAB, it cannot serve
kubectl's plugin-completion protocol, and its ``--show-completion`` ignores the shell argument. The
engine here reads the generated command tree (``tree.py``) and asks ``completers`` for dynamic values
(kube contexts, CNI networks, container ids), so a TAB costs a Python start plus a JSON load.

Protocol between the scripts in ``completions/`` and ``k8sx``: the script sets ``_K8SX_COMPLETE`` to
the shell name and ``COMP_LINE`` to the command line up to the cursor, and reads one candidate per
line (``value`` for bash, ``value<TAB>help`` for zsh and fish). A lone ``:files`` line asks the
shell to complete file names instead.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable

from k8sx.cli import completers, tree

Candidate = tuple[str, str]
FILES = ":files"

# cobra's ShellCompDirective bits, as kubectl's __complete expects them.
COBRA_DEFAULT = 0  # let the shell complete file names
COBRA_NO_FILE_COMP = 4


def candidates(words: list[str], incomplete: str) -> tuple[list[Candidate], bool]:
    """Complete ``incomplete`` after ``words`` (program name excluded).

    Returns the candidates and whether the shell should fall back to file names.
    """
    root = tree.load()
    w = tree.walk(root, words)
    node = w.node
    # --option=<value>
    if incomplete.startswith("-") and "=" in incomplete:
        name, _, value = incomplete.partition("=")
        opt = tree.find_option(node, name)
        if opt is None or not opt["value"]:
            return [], False
        found, files = _option_values(opt, value, words)
        return [(f"{name}={v}", h) for v, h in found], files
    if w.pending_option is not None:
        return _option_values(w.pending_option, incomplete, words)
    if incomplete.startswith("-"):
        opts = [(n, o["help"]) for o in node["options"] for n in o["names"] if n.startswith(incomplete)]
        return opts, False
    if node["commands"] and not w.positionals:
        cmds = [(name, sub["help"]) for name, sub in node["commands"].items() if name.startswith(incomplete)]
        return cmds, False
    return _argument_values(node, len(w.positionals), incomplete, words)


def _option_values(opt: dict, incomplete: str, words: list[str]) -> tuple[list[Candidate], bool]:
    if opt.get("choices"):
        return [(c, "") for c in opt["choices"] if c.startswith(incomplete)], False
    fn = _dynamic(completers.BY_OPTION, opt["names"])
    if fn is not None:
        return fn(incomplete, words), False
    return [], True


def _argument_values(node: dict, index: int, incomplete: str, words: list[str]) -> tuple[list[Candidate], bool]:
    args = node["args"]
    arg = None
    for pos, a in enumerate(args):
        if a["nargs"] == -1 or pos == index:
            arg = a
            break
    if arg is None:
        return [], False
    if arg.get("choices"):
        return [(c, "") for c in arg["choices"] if c.startswith(incomplete)], False
    fn = completers.BY_ARGUMENT.get(arg["name"])
    if fn is not None:
        return fn(incomplete, words), False
    return [], True


def _dynamic(table: dict[str, Callable[[str, list[str]], list[Candidate]]], names: list[str]):
    for n in names:
        if n in table:
            return table[n]
    return None


def split_line(line: str) -> tuple[list[str], str]:
    """Split a command line up to the cursor into the finished words and the word being typed."""
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote: complete the quoted word as typed so far
        try:
            words = shlex.split(line + '"')
        except ValueError:
            words = shlex.split(line + "'")
    if not line or line[-1].isspace():
        return words, ""
    return words[:-1], words[-1] if words else ""


def run_from_env() -> int:
    """Answer one completion request from a script in ``completions/`` (see the module docstring)."""
    shell = os.environ.get("_K8SX_COMPLETE", "")
    words, incomplete = split_line(os.environ.get("COMP_LINE", ""))
    found, files = candidates(words[1:], incomplete)
    out = sys.stdout
    if files and not found:
        out.write(FILES + "\n")
        return 0
    for value, help_ in found:
        if shell == "bash":
            # bash splits words at COMP_WORDBREAKS (= and : among them): answer relative to that word.
            cut = max(incomplete.rfind("="), incomplete.rfind(":"))
            out.write(value[cut + 1:] + "\n")
        else:
            out.write(f"{value}\t{_one_line(help_)}\n" if help_ else f"{value}\n")
    return 0


def run_cobra(args: list[str]) -> int:
    """Answer kubectl's plugin completion (``kubectl_complete-x ARGS... INCOMPLETE``) in cobra's format."""
    words, incomplete = (args[:-1], args[-1]) if args else ([], "")
    found, files = candidates(words, incomplete)
    for value, help_ in found:
        sys.stdout.write(f"{value}\t{_one_line(help_)}\n" if help_ else f"{value}\n")
    sys.stdout.write(f":{COBRA_DEFAULT if files and not found else COBRA_NO_FILE_COMP}\n")
    return 0


def _one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
