"""Regenerate (or check) the committed Python stubs of the CRI proto: ``python -m k8sx.cri.codegen [--check]``.

The stubs under ``k8sx/cri/api/runtime/v1/`` are committed so that installing k8sx needs no protoc,
but then they can silently drift from ``protos/runtime/v1/api.proto``. This is the one command that
produces them, and ``--check`` (run by the test suite) says when they no longer match the proto.

The proto is handed to protoc under the virtual path ``k8sx/cri/api/runtime/v1/api.proto``, so the
generated ``api_pb2_grpc.py`` imports its messages by an absolute, importable module path and the
upstream file stays byte-for-byte unchanged.

A different grpcio-tools release changes the generated text (version guards, code shape) without
changing the API; so the check compares the compiled descriptor always, and the exact text only
when the installed generator is the one that produced the committed files.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "protos")
PROTO = os.path.join("runtime", "v1", "api.proto")
PACKAGE_DIR = os.path.join("k8sx", "cri", "api")
OUT_DIR = os.path.join(REPO, PACKAGE_DIR, "runtime", "v1")
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")

INIT_FILES = {
    os.path.join(REPO, PACKAGE_DIR, "__init__.py"):
        '"""Generated code of the CRI API (``python -m k8sx.cri.codegen``); do not edit by hand."""\n',
    os.path.join(REPO, PACKAGE_DIR, "runtime", "__init__.py"):
        '"""Generated code of the CRI API, proto package ``runtime``."""\n',
    os.path.join(REPO, PACKAGE_DIR, "runtime", "v1", "__init__.py"):
        '"""Generated code of the CRI API, proto package ``runtime.v1``: ``api_pb2`` and ``api_pb2_grpc``."""\n',
}

_GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '([^']+)'$", re.M)


def generate(out_root: str) -> dict[str, str]:
    """Run protoc on the proto into ``out_root``; return the generated files' text by file name."""
    import grpc_tools
    from grpc_tools import protoc  # the test extra; only this command needs it

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_DIR}={PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        os.path.join(PROTO_ROOT, PROTO),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit status {rc}")
    gen_dir = os.path.join(out_root, PACKAGE_DIR, "runtime", "v1")
    out = {}
    for name in GENERATED:
        with open(os.path.join(gen_dir, name), encoding="utf-8") as f:
            out[name] = f.read()
    return out


def serialized_descriptor(pb2_source: str) -> bytes:
    """The FileDescriptorProto bytes that a generated ``api_pb2.py`` registers (``AddSerializedFile``)."""
    for node in ast.walk(ast.parse(pb2_source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile" and node.args):
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise ValueError("no AddSerializedFile(...) call in the generated module")


def generator_version(grpc_source: str) -> str | None:
    m = _GRPC_VERSION.search(grpc_source)
    return m.group(1) if m else None


def stale_files(fresh: dict[str, str]) -> list[str]:
    """Which committed files disagree with ``fresh`` (see the module docstring for what counts)."""
    from google.protobuf import descriptor_pb2

    committed: dict[str, str | None] = {}
    for name in GENERATED:
        try:
            with open(os.path.join(OUT_DIR, name), encoding="utf-8") as f:
                committed[name] = f.read()
        except FileNotFoundError:
            committed[name] = None
    stale = [path for path, text in INIT_FILES.items() if _read(path) != text]
    if any(text is None for text in committed.values()):
        return stale + [os.path.join(OUT_DIR, n) for n, t in committed.items() if t is None]

    def parsed(source: str) -> descriptor_pb2.FileDescriptorProto:
        return descriptor_pb2.FileDescriptorProto.FromString(serialized_descriptor(source))

    if parsed(committed["api_pb2.py"] or "") != parsed(fresh["api_pb2.py"]):
        return stale + [os.path.join(OUT_DIR, n) for n in GENERATED]
    same_tools = generator_version(committed["api_pb2_grpc.py"] or "") == generator_version(fresh["api_pb2_grpc.py"])
    if same_tools:
        stale += [os.path.join(OUT_DIR, n) for n in GENERATED if committed[n] != fresh[n]]
    return stale


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write(fresh: dict[str, str]) -> list[str]:
    os.makedirs(OUT_DIR, exist_ok=True)
    written = []
    for path, text in INIT_FILES.items():
        if _read(path) != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(path)
    for name, text in fresh.items():
        path = os.path.join(OUT_DIR, name)
        if _read(path) != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    check = "--check" in argv
    with tempfile.TemporaryDirectory(prefix="k8sx-codegen-") as tmp:
        fresh = generate(tmp)
    if check:
        stale = stale_files(fresh)
        for path in stale:
            sys.stderr.write(f"stale: {os.path.relpath(path, REPO)}\n")
        if stale:
            sys.stderr.write("run: python -m k8sx.cri.codegen\n")
        return 1 if stale else 0
    for path in write(fresh):
        sys.stdout.write(f"wrote {os.path.relpath(path, REPO)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
