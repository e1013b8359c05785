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


def render_document(doc: Any, fmt: Any, jsonpb: bool = False) -> None:
    """Render a protobuf-derived document as crictl does: JSON in field order, YAML as Go prints it.

    crictl converts its JSON to YAML through a generic map (sorted keys, double quotes) and prints
    it followed by an empty line; doing the same keeps ``-o yaml`` diffable against crictl's.
    ``jsonpb``: the document is a list of messages that crictl prints with jsonpb (ps, pods, stats),
    whose empty maps look different from those of its re-marshalled inspect documents.
    """
    from k8sx.cli.output import Format, dump_json_pb, dump_yaml_go, render

    if Format(fmt) is Format.yaml:
        typer.echo(dump_yaml_go(doc))
    elif jsonpb and Format(fmt) is Format.json:
        typer.echo(dump_json_pb(doc))
    else:
        render(doc, fmt)


def human_duration(seconds: float) -> str:
    """go-units' ``HumanDuration``, which crictl prints as "<duration> ago" in CREATED columns."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(timestamp_ns: int) -> str:
    import time

    return human_duration(time.time() - timestamp_ns / 1e9) + " ago"


def rfc3339nano(timestamp_ns: int) -> str:
    """Go's ``time.Unix(0, ns).Format(time.RFC3339Nano)`` in UTC (trailing zeros of the fraction dropped)."""
    import datetime

    secs, nanos = divmod(timestamp_ns, 1_000_000_000)
    base = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=secs)
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return base.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def go_time(timestamp_ns: int) -> str:
    """Go's ``time.Time.String()`` in UTC: ``2026-11-26 20:16:03.441649048 +0000 UTC`` (zeros trimmed)."""
    text = rfc3339nano(timestamp_ns)
    return text[:10] + " " + text[11:-1] + " +0000 UTC"


def sorted_nested(doc: dict[str, Any]) -> dict[str, Any]:
    """crictl's ``inspect`` layout: top-level keys in field order, everything below sorted (a Go map)."""

    def sort(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: sort(v[k]) for k in sorted(v)}
        if isinstance(v, list):
            return [sort(x) for x in v]
        return v

    return {k: sort(v) for k, v in doc.items()}


def parse_labels(values: list[str] | None) -> dict[str, str]:
    """crictl's ``--label key=value`` (repeatable) as a selector map."""
    from k8sx.errors import UsageError

    out = {}
    for v in values or []:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise UsageError(f"incorrectly specified label: {v!r} (use key=value)")
        out[key] = value
    return out


def newest_first(items: list[Any], name_regex: str = "", namespace_regex: str = "", latest: bool = False,
                 last: int = 0) -> list[Any]:
    """crictl's ``ps``/``pods`` selection: name (and namespace) regexps, newest first, ``-l``/``-n N``."""
    import re

    def matches(pattern: str, value: str) -> bool:
        return not pattern or re.search(pattern, value) is not None

    chosen = [i for i in items if matches(name_regex, i.metadata.name)
              and matches(namespace_regex, getattr(i.metadata, "namespace", ""))]
    chosen.sort(key=lambda i: i.created_at, reverse=True)
    n = 1 if latest else len(chosen)
    if last > 0:
        n = last
    return chosen[:n]
