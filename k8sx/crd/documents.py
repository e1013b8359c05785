"""Reading and writing CRD documents: multi-document YAML (or JSON) with the line of every node.

The validator and the converter report problems as ``file:line``; PyYAML's ``compose`` keeps each
node's start mark, so documents are composed once, constructed with the safe loader, and the marks
are kept beside the data keyed by path. Output is deterministic (fixed key order, block style) so
that generated CRDs diff cleanly in git and golden files stay byte-stable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from k8sx.errors import K8sxError, UsageError

Path = tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document: the data, where it came from, and the line (1-based) of each node."""

    data: Any
    source: str
    index: int = 0
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor that exists in the file."""
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def where(self, path: Path) -> str:
        line = self.line(path)
        return f"{self.source}:{line}" if line else self.source


def _marks(node: Any, path: Path, out: dict[Path, int]) -> None:
    import yaml

    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
            out[(*path, name)] = key.start_mark.line + 1
            _marks(value, (*path, name), out)
            out[(*path, name)] = key.start_mark.line + 1  # the key's line, even for block values
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, (*path, i), out)


def load_text(text: str, source: str) -> list[Document]:
    """All documents of ``text`` (empty documents dropped); a YAML error names the file and line."""
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs: list[Document] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=loader_cls))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise K8sxError(f"{where}: not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise K8sxError(f"{source}: not valid YAML: {e}") from None
    for i, node in enumerate(nodes):
        if node is None:
            continue
        loader = loader_cls("")
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as e:
            raise K8sxError(f"{source}: document {i + 1}: {e}") from None
        finally:
            loader.dispose()
        if data is None:
            continue
        lines: dict[Path, int] = {}
        _marks(node, (), lines)
        docs.append(Document(data, source, i, lines))
    return docs


def load_file(path: str) -> list[Document]:
    """Documents of the file at ``path`` (``-`` = stdin). A missing file is a usage error."""
    import sys

    if path == "-":
        return load_text(sys.stdin.read(), "<stdin>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    return load_text(text, path)


def load_files(paths: Iterable[str]) -> list[Document]:
    """Documents of every path; a directory stands for its .yaml, .yml and .json files (sorted), as
    with ``kubectl apply -f DIR``."""
    import os

    out: list[Document] = []
    for p in paths:
        if p != "-" and os.path.isdir(p):
            names = sorted(n for n in os.listdir(p) if n.endswith((".yaml", ".yml", ".json")))
            if not names:
                raise UsageError(f"{p}: no .yaml, .yml or .json files in the directory")
            for n in names:
                out.extend(load_file(os.path.join(p, n)))
        else:
            out.extend(load_file(p))
    return out


def _pure_dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            return super().increase_indent(flow, False)

    return Dumper


def dump(docs: list[Any], fmt: str = "yaml", sort_keys: bool = False) -> str:
    """Deterministic text of ``docs``: YAML documents (``---`` between) or JSON (a list if several).

    Key order is the order of the dicts (assemble builds them in controller-gen's order), so two
    runs over the same input give the same bytes. ``sort_keys`` orders every mapping (for diffs of
    objects that came back from a server in its own order).
    """
    if fmt == "json":
        body = docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"
    import yaml

    parts = [yaml.dump(d, Dumper=_pure_dumper(), sort_keys=sort_keys, default_flow_style=False,
                       allow_unicode=True, width=4096) for d in docs]
    return "---\n".join(parts)
