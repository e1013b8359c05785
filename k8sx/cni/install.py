"""Rendering and installing k8sx's plugin executables (``k8sx cni install-plugins``, ``plugins/``).

Why this exists: an executable is a few lines around :mod:`k8sx.cni.plugin_client`, but it must
name the right interpreter (``-IS``: no site, so start-up stays ~10 ms), know where the ``k8sx``
package lives, and carry the ``# k8sx-cni-plugin: <module>`` marker the runner looks for in its
first 256 bytes. One renderer produces both the installed files and the copies in ``plugins/``
(which a test keeps current), so the two never drift.

Installed names are ``k8sx-<role>`` (no clash with the reference plugins) unless the reference
names are asked for; the flannel meta-plugin picks its delegates' default types to match (see
:mod:`k8sx.cni.plugins.flannel`).

Where a C compiler exists, the executables' ``#!`` line names a small native client
(``plugin_client.c``, compiled next to them as ``.k8sx-plugin-client``) instead of Python: it starts
in ~1 ms instead of ~20 ms, talks to the daemon the same way, and without a daemon hands the very
same file to Python. The file stays a valid Python script either way.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass

from k8sx.errors import K8sxError
from k8sx.native import compile_c

# role (the reference plugin's name) -> module
PLUGINS: dict[str, str] = {
    "bridge": "k8sx.cni.plugins.bridge",
    "host-local": "k8sx.cni.plugins.host_local",
    "loopback": "k8sx.cni.plugins.loopback",
    "portmap": "k8sx.cni.plugins.portmap",
    "flannel": "k8sx.cni.plugins.flannel",
}
PREFIX = "k8sx-"
CLIENT = ".k8sx-plugin-client"
REPO_SHEBANG = "#!/usr/bin/env -S python3 -IS"

_TEMPLATE = '''{shebang}
# k8sx-cni-plugin: {module}
"""k8sx's {role} CNI plugin. A thin client of `k8sx cni plugind` (see k8sx/cni/plugin_client.py)."""
import os
import sys

ROOT = {root!r}  # the directory holding the k8sx package (None: this file's checkout)
sys.path.insert(0, ROOT or os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
from k8sx.cni.plugin_client import main  # noqa: E402

main("{module}")
'''


def package_root() -> str:
    """The directory that contains the ``k8sx`` package of this installation."""
    import k8sx

    return os.path.dirname(os.path.dirname(os.path.abspath(k8sx.__file__)))


def render(role: str, python: str | None = None, root: str | None = None, client: str | None = None) -> str:
    """The executable for ``role``; ``python``/``root`` None gives the checkout copy of ``plugins/``.

    ``client``: the native client to name in the ``#!`` line instead of ``python -IS``.
    """
    shebang = f"#!{client}" if client else f"#!{python} -IS" if python else REPO_SHEBANG
    if len(shebang) > 127:
        raise K8sxError(f"interpreter path too long for a shebang line: {shebang[2:]}")
    return _TEMPLATE.format(shebang=shebang, module=PLUGINS[role], role=role, root=root)


def build_client(directory: str, python: str) -> str | None:
    """Compile the native client into ``directory``; None when no C compiler can (Python is used then)."""
    if any(c in python for c in '"\\\n'):
        return None
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin_client.c")
    built, _ = compile_c(source, os.path.join(directory, CLIENT), [f'-DK8SX_PYTHON="{python}"'])
    return built


@dataclass
class Installed:
    plugins: list[str]
    client: str | None  # the native client, or None when the executables start Python directly


def installed_name(role: str, reference_names: bool) -> str:
    return role if reference_names else PREFIX + role


def install(directory: str, reference_names: bool = False, python: str | None = None,
            native: bool = True) -> Installed:
    """Write every plugin executable into ``directory`` (atomically: running plugins are unaffected)."""
    python = python or sys.executable
    root = package_root()
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
    except OSError as exc:
        raise K8sxError(f"cannot create {directory}: {exc.strerror or exc}") from None
    directory = os.path.abspath(directory)
    client = build_client(directory, python) if native else None
    paths = []
    for role in PLUGINS:
        dest = os.path.join(directory, installed_name(role, reference_names))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".k8sx-", dir=directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(render(role, python, root, client))
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
        except OSError as exc:
            raise K8sxError(f"cannot install {dest}: {exc.strerror or exc}") from None
        paths.append(dest)
    return Installed(paths, client)
