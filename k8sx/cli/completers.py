"""Dynamic completion values: kube contexts, clusters and users, and (as groups arrive) CNI network
names and container ids.

Each completer takes the word being typed and the words before it, and returns ``(value, help)``
pairs. They run on every TAB, so they read files directly and never import kubernetes, grpc or
pyroute2 (an import-linter contract and a test keep it so). Which parameter gets which completer is
decided by name, in the two tables at the bottom: an option named ``--context`` or an argument
named ``NETWORK`` completes the same way in every command.
"""

from __future__ import annotations

import json
import os
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


def _option_value(words: list[str], option: str) -> str | None:
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def cni_networks(incomplete: str, words: list[str]) -> list[Candidate]:
    """Network names of --conf-dir / $NETCONFPATH / /etc/cni/net.d, in libcni's order (first wins)."""
    conf_dir = _option_value(words, "--conf-dir") or os.environ.get("NETCONFPATH") or "/etc/cni/net.d"
    try:
        names = [e.name for e in os.scandir(conf_dir) if e.is_file()]
    except OSError:
        return []
    files = sorted(n for n in names if n.endswith(".conflist")) + sorted(
        n for n in names if n.endswith((".conf", ".json")))
    out: dict[str, str] = {}
    for fname in files:
        try:
            with open(os.path.join(conf_dir, fname), encoding="utf-8") as f:
                name = json.load(f).get("name")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(name, str) and name.startswith(incomplete) and name not in out:
            out[name] = fname
    return list(out.items())


def cri_endpoints(incomplete: str, words: list[str]) -> list[Candidate]:
    """CRI sockets present on this node: k8sx's and crictl's defaults, and /etc/crictl.yaml's endpoints."""
    from k8sx.cri import client

    found: dict[str, str] = {}
    for ep in client.DEFAULT_ENDPOINTS:
        if os.path.exists(client.unix_path(ep)):
            found.setdefault(ep, "socket present")
    try:
        options = client.load_config(client.DEFAULT_CONFIG) if os.path.exists(client.DEFAULT_CONFIG) else {}
    except Exception:  # a broken file must not break TAB
        options = {}
    for key in ("runtime-endpoint", "image-endpoint"):
        if options.get(key):
            found.setdefault(str(options[key]), f"{key} in {client.DEFAULT_CONFIG}")
    return [(ep, help_) for ep, help_ in found.items() if ep.startswith(incomplete)]


def _runtime_rows(query: str, incomplete: str) -> list[Candidate]:
    """Rows (id, help) of k8sx's runtime state DB, opened read-only with sqlite3 (no grpc, no server needed)."""
    import sqlite3

    path = os.path.join(os.environ.get("K8SX_STATE", "/run/k8sx"), "runtime.db")
    if not os.path.exists(path):
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2)
        try:
            rows = db.execute(query).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    return [(r[0], r[1]) for r in rows if r[0].startswith(incomplete)]


def cri_pod_ids(incomplete: str, words: list[str]) -> list[Candidate]:
    """Pod sandbox ids of the local ``k8sx runtime serve`` ($K8SX_STATE, default /run/k8sx)."""
    return _runtime_rows("SELECT id, namespace || '/' || name || ' ' || state FROM pods", incomplete)


def cri_container_ids(incomplete: str, words: list[str]) -> list[Candidate]:
    """Container ids of the local ``k8sx runtime serve`` ($K8SX_STATE, default /run/k8sx)."""
    return _runtime_rows("SELECT id, name || ' ' || state FROM containers", incomplete)


def network_interfaces(incomplete: str, words: list[str]) -> list[Candidate]:
    """This namespace's network interfaces (flannel's ``--iface``), from /sys/class/net."""
    out = []
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []
    for name in names:
        if name.startswith(incomplete):
            try:
                with open(f"/sys/class/net/{name}/operstate") as fh:
                    state = fh.read().strip()
            except OSError:
                state = ""
            out.append((name, state))
    return out


Completer = Callable[[str, list[str]], list[Candidate]]

BY_OPTION: dict[str, Completer] = {
    "--context": kube_contexts,
    "--cluster": kube_clusters,
    "--user": kube_users,
    "--runtime-endpoint": cri_endpoints,
    "--image-endpoint": cri_endpoints,
    "--iface": network_interfaces,
}

BY_ARGUMENT: dict[str, Completer] = {
    "NETWORK": cni_networks,
    "POD_ID": cri_pod_ids,
    "POD_IDS": cri_pod_ids,
    "CONTAINER_ID": cri_container_ids,
    "CONTAINER_IDS": cri_container_ids,
}
