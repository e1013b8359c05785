"""What the ``k8sx runtime`` client verbs share: crictl's global options, the client they build, crictl's formats.

crictl takes ``--runtime-endpoint/-r``, ``--image-endpoint/-i``, ``--config/-c``, ``--timeout/-t``
and ``--debug/-D`` before the verb; so does ``k8sx runtime``. The group callback stores them, and
each verb asks :func:`client` for a connected :class:`k8sx.cri.client.Client`. Sizes and ids are
printed the way crictl prints them (go-units sizes, 13-character ids), so output lines up with
what people already parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from k8sx.cri.client import Client

TRUNCATED_ID_LEN = 13
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


@dataclass
class GlobalOptions:
    """crictl's global flags as given on the command line (``None`` = not given)."""

    runtime_endpoint: str | None = None
    image_endpoint: str | None = None
    config: str | None = None
    timeout: str | None = None
    debug: bool | None = None


def options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj if ctx.obj is None else ctx.obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def client(ctx: typer.Context) -> Client:
    """A client for the endpoints the global options, environment and crictl.yaml select."""
    from k8sx.cri.client import Client, resolve

    o = options(ctx)
    settings = resolve(runtime_endpoint=o.runtime_endpoint, image_endpoint=o.image_endpoint, config=o.config,
                       timeout=o.timeout, debug=o.debug)
    if settings.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="DEBU %(message)s")
        logging.getLogger("k8sx").debug("endpoints: runtime %s, image %s, timeout %.1fs, config %s",
                                        settings.runtime_endpoint or "(defaults)",
                                        settings.image or "(defaults)", settings.timeout, settings.config_file)
    return Client(settings)


def human_size(size: float, precision: int = 3) -> str:
    """go-units' ``HumanSizeWithPrecision``: decimal units, ``%.3g`` (``2636672`` -> ``2.64MB``)."""
    i = 0
    while size >= 1000.0 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{_UNITS[i]}"


def truncate_id(value: str, prefix: str = "sha256:") -> str:
    return value.removeprefix(prefix)[:TRUNCATED_ID_LEN]


def status_document(status: dict[str, Any], info: Any = None) -> dict[str, Any]:
    """crictl's ``{"status": ..., <info keys>...}`` for inspect verbs; info values that are JSON are embedded."""
    import json

    doc: dict[str, Any] = {"status": status}
    for key in sorted(info or {}):
        try:
            doc[key] = json.loads(info[key])
        except ValueError:
            doc[key] = info[key]
    return doc


def render_document(doc: Any, fmt: Any) -> None:
    """Render a protobuf-derived document as crictl does: JSON in field order, YAML as Go prints it.

    crictl converts its JSON to YAML through a generic map (sorted keys, double quotes) and prints
    it followed by an empty line; doing the same keeps ``-o yaml`` diffable against crictl's.
    """
    from k8sx.cli.output import Format, dump_yaml_go, render

    if Format(fmt) is Format.yaml:
        typer.echo(dump_yaml_go(doc))
    else:
        render(doc, fmt)
