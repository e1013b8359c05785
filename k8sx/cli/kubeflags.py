"""kubectl's connection flags for every command that talks to an API server, declared once.

A command decorated with ``@kube_command`` gets ``--kubeconfig --context --cluster --user
-n/--namespace --as --request-timeout`` (in their own help panel, with completion of contexts,
clusters and users) and receives them as one ``kube: KubeConnection`` argument. Since typer only
accepts a command's options after its name, ``entry.run`` hoists these flags from anywhere on the
command line (``kubectl x --context prod crd apply ...``) using the generated command tree.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from k8sx.kube import KubeConnection

_PANEL = "Kubernetes connection (as kubectl)"

# (parameter name, flag names, help) in kubectl's order.
_FLAGS: list[tuple[str, list[str], str]] = [
    ("kubeconfig", ["--kubeconfig"], "Path to the kubeconfig file to use."),
    ("context", ["--context"], "The name of the kubeconfig context to use."),
    ("cluster", ["--cluster"], "The name of the kubeconfig cluster to use."),
    ("user", ["--user"], "The name of the kubeconfig user to use."),
    ("namespace", ["--namespace", "-n"], "The namespace scope for this request."),
    ("as_user", ["--as"], "Username to impersonate for the operation."),
    ("request_timeout", ["--request-timeout"], "How long to wait for one request (0 = no timeout; 30s, 1m)."),
]


def kube_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``fn`` kubectl's connection flags; it must take a keyword argument ``kube: KubeConnection``."""
    sig = inspect.signature(fn)
    if "kube" not in sig.parameters:
        raise TypeError(f"{fn.__name__} must take a 'kube' parameter")
    params = [p for p in sig.parameters.values() if p.name != "kube"]
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[str | None, typer.Option(*flags, help=help_, rich_help_panel=_PANEL,
                                                           show_default=False)],
        )
        for name, flags, help_ in _FLAGS
    ]
    names = [name for name, _, _ in _FLAGS]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kube = KubeConnection(**{name: kwargs.pop(name, None) for name in names})
        return fn(*args, kube=kube, **kwargs)

    hints = {k: v for k, v in inspect.get_annotations(fn, eval_str=True).items() if k != "kube"}
    wrapper.__annotations__ = hints | {p.name: p.annotation for p in extra}
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in params] + extra)
    del wrapper.__wrapped__  # typer must see the new signature, not fn's
    return wrapper
