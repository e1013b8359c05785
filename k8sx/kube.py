"""Connecting to a Kubernetes API server the way kubectl does, for every part of k8sx that needs one.

``crd apply``, flannel's kube subnet manager and the operator tools all take kubectl's connection
flags; this module turns them into a configured client. Reading kubeconfig files (the merge of
``$KUBECONFIG``, first file wins) is plain YAML here, so shell completion of contexts can use it on
every TAB; the ``kubernetes`` package (a quarter of a second to import) is loaded only when a client
is actually built.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from k8sx.errors import K8sxError, UsageError

# kubeconfig sections whose entries are merged by name, the first file's entry winning (kubectl's rule).
_NAMED_SECTIONS = ("clusters", "contexts", "users")


def kubeconfig_paths(explicit: str | None = None) -> list[str]:
    """The files kubectl would read: ``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``."""
    if explicit:
        return [os.path.expanduser(explicit)]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [os.path.expanduser(p) for p in env.split(os.pathsep) if p]
    return [os.path.join(os.path.expanduser("~"), ".kube", "config")]


def load_kubeconfig(paths: list[str], strict: bool = False) -> dict[str, Any]:
    """Merge kubeconfig files as kubectl does. Missing or unreadable files are skipped unless ``strict``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    merged: dict[str, Any] = {name: [] for name in _NAMED_SECTIONS}
    seen: dict[str, set[str]] = {name: set() for name in _NAMED_SECTIONS}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.load(f, Loader=loader) or {}
        except OSError as e:
            if strict:
                raise K8sxError(f"cannot read kubeconfig {path}: {e.strerror}") from None
            continue
        except yaml.YAMLError as e:
            if strict:
                raise K8sxError(f"kubeconfig {path} is not valid YAML: {e}") from None
            continue
        if not isinstance(doc, dict):
            if strict:
                raise K8sxError(f"kubeconfig {path} is not a mapping")
            continue
        base = os.path.dirname(os.path.abspath(path))
        for section in _NAMED_SECTIONS:
            for entry in doc.get(section) or []:
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and name not in seen[section]:
                    seen[section].add(name)
                    merged[section].append(_absolute_paths(entry, base))
        if "current-context" not in merged and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
    return merged


def _absolute_paths(entry: dict[str, Any], base: str) -> dict[str, Any]:
    """Resolve file references relative to the kubeconfig that holds them, as kubectl does."""
    out = dict(entry)
    for key in ("cluster", "user"):
        body = entry.get(key)
        if isinstance(body, dict):
            body = dict(body)
            for field in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
                value = body.get(field)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    body[field] = os.path.join(base, value)
            out[key] = body
    return out


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_timeout(value: str | None) -> float | None:
    """kubectl's ``--request-timeout``: ``0`` means none; else seconds (``30``) or a duration (``1m30s``)."""
    if value is None or value.strip() == "0":
        return None
    v = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", v):
        return float(v)
    if re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+", v):
        return sum(float(n) * _UNITS[u] for n, u in _PART.findall(v))
    raise UsageError(f"invalid --request-timeout {value!r}: use 0, seconds, or a duration like 30s, 1m, 1h")


@dataclass(frozen=True)
class KubeConnection:
    """kubectl's connection flags, as given on the command line (None = not given)."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None
    as_user: str | None = None
    request_timeout: str | None = None

    def config(self) -> dict[str, Any]:
        """The merged kubeconfig with the chosen context, cluster and user applied."""
        paths = kubeconfig_paths(self.kubeconfig)
        if self.kubeconfig and not os.path.exists(paths[0]):
            raise K8sxError(f"kubeconfig {paths[0]} does not exist")
        cfg = load_kubeconfig(paths, strict=bool(self.kubeconfig))
        name = self.context or cfg.get("current-context")
        contexts = {c["name"]: c for c in cfg["contexts"]}
        if not name:
            if self.cluster is None:
                raise K8sxError(f"no context chosen and no current-context in {', '.join(paths)}",
                                hint="pass --context, or set one with kubectl config use-context")
            contexts[""] = {"name": "", "context": {}}
            name = ""
        if name not in contexts:
            raise K8sxError(f"context {name!r} not found in {', '.join(paths)}",
                            hint=f"known contexts: {', '.join(sorted(contexts)) or 'none'}")
        ctx = dict(contexts[name].get("context") or {})
        for flag, key, section in ((self.cluster, "cluster", "clusters"), (self.user, "user", "users")):
            if flag is not None:
                if flag not in {e["name"] for e in cfg[section]}:
                    raise K8sxError(f"{key} {flag!r} not found in {', '.join(paths)}")
                ctx[key] = flag
        cfg["contexts"] = [c for c in cfg["contexts"] if c["name"] != name] + [{"name": name, "context": ctx}]
        cfg["current-context"] = name
        return cfg

    def default_namespace(self) -> str:
        """--namespace, else the context's namespace, else ``default`` (kubectl's order)."""
        if self.namespace:
            return self.namespace
        try:
            cfg = self.config()
        except K8sxError:
            return "default"
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        return (ctx.get("context") or {}).get("namespace") or "default"

    def timeout(self) -> float | None:
        return parse_timeout(self.request_timeout)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this connection (imports kubernetes on first use)."""
        from kubernetes import client, config

        cfg = self.config()
        configuration = client.Configuration()
        try:
            config.load_kube_config_from_dict(cfg, context=cfg["current-context"],
                                              client_configuration=configuration, persist_config=False)
        except config.ConfigException as e:
            raise K8sxError(f"kubeconfig: {e}") from None
        api = client.ApiClient(configuration)
        if self.as_user:
            api.set_default_header("Impersonate-User", self.as_user)
        return api
