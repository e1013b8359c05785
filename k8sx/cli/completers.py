"""Dynamic completion values: kube contexts, clusters and users, and (as groups arrive) CNI network
names and container ids.

Each completer takes the word being typed and the words before it, and returns ``(value, help)``
pairs. They run on every TAB, so they read files directly and never import kubernetes, grpc or
pyroute2 (an import-linter contract and a test keep it so). Which parameter gets which completer is
decided by name, in the two tables at the bottom: an option named ``--context`` or an argument
named ``NETWORK`` completes the same way in every command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Candidate = tuple[str, str]


def _explicit_kubeconfig(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word == "--kubeconfig" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--kubeconfig="):
            return word.split("=", 1)[1]
    return None


def _kubeconfig_entries(words: list[str], section: str) -> list[dict[str, Any]]:
    from k8sx import kube

    return kube.load_kubeconfig(kube.kubeconfig_paths(_explicit_kubeconfig(words)))[section]


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
