"""Dynamic completion values: kube contexts, clusters and users, and (as groups arrive) CNI network
names and container ids.

Each completer takes the word being typed and the words before it, and returns ``(value, help)``
pairs. They run on every TAB, so they read files directly and never import kubernetes, grpc or
pyroute2 (an import-linter contract and a test keep it so). Which parameter gets which completer is
decided by name, in the two tables at the bottom: an option named ``--context`` or an argument
named ``NETWORK`` completes the same way in every command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

Candidate = tuple[str, str]


def kubeconfig_paths(words: list[str]) -> list[str]:
    """The kubeconfig files kubectl would read: --kubeconfig, else $KUBECONFIG, else ~/.kube/config."""
    for i, word in enumerate(words):
        if word == "--kubeconfig" and i + 1 < len(words):
            return [words[i + 1]]
        if word.startswith("--kubeconfig="):
            return [word.split("=", 1)[1]]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [os.path.join(os.path.expanduser("~"), ".kube", "config")]


def _kubeconfig_entries(words: list[str], section: str) -> list[dict[str, Any]]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for path in kubeconfig_paths(words):
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                doc = yaml.load(f, Loader=loader) or {}
        except (OSError, yaml.YAMLError):
            continue
        for entry in doc.get(section) or []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name not in seen:  # first file wins, as kubectl merges
                seen.add(name)
                out.append(entry)
    return out


def kube_contexts(incomplete: str, words: list[str]) -> list[Candidate]:
    out = []
    for entry in _kubeconfig_entries(words, "contexts"):
        ctx = entry.get("context") or {}
        help_ = f"cluster {ctx.get('cluster', '?')}, user {ctx.get('user', '?')}"
        if entry["name"].startswith(incomplete):
            out.append((entry["name"], help_))
    return out


def kube_clusters(incomplete: str, words: list[str]) -> list[Candidate]:
    return [(e["name"], (e.get("cluster") or {}).get("server", "")) for e in
            _kubeconfig_entries(words, "clusters") if e["name"].startswith(incomplete)]


def kube_users(incomplete: str, words: list[str]) -> list[Candidate]:
    return [(e["name"], "") for e in _kubeconfig_entries(words, "users") if e["name"].startswith(incomplete)]


Completer = Callable[[str, list[str]], list[Candidate]]

BY_OPTION: dict[str, Completer] = {
    "--context": kube_contexts,
    "--cluster": kube_clusters,
    "--user": kube_users,
}

BY_ARGUMENT: dict[str, Completer] = {}
