"""The command tree as data: what every command, option and argument is, without importing typer.

The tree is generated from the typer app (``python -m k8sx.cli.gen``) into ``tree.json`` next to this
module, and a test fails when it is stale. Two fast paths read it: shell completion (which must
answer a TAB in well under 0.15 s, so it cannot afford to import typer and rich) and the hoisting of
kubectl's connection flags to the command that takes them.

A node is ``{"help": str, "options": [...], "args": [...], "commands": {name: node}}``; an option is
``{"names": [...], "help": str, "value": bool, "choices": [...] | None}``; an argument is
``{"name": str, "choices": [...] | None, "nargs": int}`` (nargs -1 means any number).
"""

from __future__ import annotations

import json
import os
from typing import Any

TREE_FILE = os.path.join(os.path.dirname(__file__), "tree.json")

Node = dict[str, Any]

# kubectl's connection flags (the subset k8sx honours), all of which take a value.
KUBE_FLAGS = ("--kubeconfig", "--context", "--cluster", "--user", "--namespace", "-n", "--as",
              "--request-timeout")


def load() -> Node:
    with open(TREE_FILE, encoding="utf-8") as f:
        return json.load(f)


def find_option(node: Node, name: str) -> dict[str, Any] | None:
    for opt in node["options"]:
        if name in opt["names"]:
            return opt
    return None


class Walk:
    """Where a list of words leads in the tree (a plain class: dataclasses cost a TAB ~10 ms)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.path: list[str] = []
        self.positionals: list[str] = []
        self.pending_option: dict[str, Any] | None = None  # the last word is an option awaiting its value
        self.leaf_index = 0  # index in the words just after the last command name


def walk(root: Node, words: list[str]) -> Walk:
    """Follow ``words`` (no program name) through the tree as the parser would."""
    w = Walk(node=root)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            w.positionals.extend(words[i:])
            break
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            opt = find_option(w.node, name) or _kube_option(name)
            if opt and opt["value"] and "=" not in word:
                if i == len(words):
                    w.pending_option = opt
                    break
                i += 1
            continue
        if not w.positionals and word in w.node["commands"]:
            w.node = w.node["commands"][word]
            w.path.append(word)
            w.leaf_index = i
            continue
        w.positionals.append(word)
    return w


def _kube_option(name: str) -> dict[str, Any] | None:
    """Kube flags take a value wherever they stand, even before the command that declares them."""
    return {"names": [name], "help": "", "value": True, "choices": None} if name in KUBE_FLAGS else None


def hoist_kube_flags(root: Node, args: list[str]) -> list[str]:
    """Move kubectl connection flags written before the command name to after it.

    ``kubectl x --context prod crd apply f.yaml`` then parses as ``... crd apply --context prod f.yaml``.
    Only done when the command reached actually declares the flag; otherwise the words stay where
    they are, and the parser reports the unknown option as usual.
    """
    w = walk(root, args)
    if not w.path:
        return args
    head, tail = args[: w.leaf_index], args[w.leaf_index:]
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(head):
        word = head[i]
        name = word.split("=", 1)[0]
        if name in KUBE_FLAGS and find_option(w.node, name):
            moved.append(word)
            if "=" not in word and i + 1 < len(head):
                moved.append(head[i + 1])
                i += 1
        else:
            kept.append(word)
        i += 1
    if not moved:
        return args
    return kept + moved + tail
