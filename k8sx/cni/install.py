"""Rendering and installing k8sx's plugin executables (``k8sx cni install-plugins``, ``plugins/``).

Why this exists: an executable is a few lines around :mod:`k8sx.cni.plugin_client`, but it must
name the right interpreter (``-IS``: no site, so start-up stays ~10 ms), know where the ``k8sx``
package lives, and carry the ``# k8sx-cni-plugin: <module>`` marker the runner looks for in its
first 256 bytes. One renderer produces both the installed files and the copies in ``plugins/``
(which a test keeps current), so the two never drift.

Installed names are ``k8sx-<role>`` (no clash with the reference plugins) unless the reference
names are asked for; the flannel meta-plugin picks its delegates' default types to match (see
:mod:`k8sx.cni.plugins.flannel`).
"""

from __future__ import annotations

import os
import sys
import tempfile

from k8sx.errors import K8sxError

# role (the reference plugin's name) -> module
PLUGINS: dict[str, str] = {
    "bridge": "k8sx.cni.plugins.bridge",
    "host-local": "k8sx.cni.plugins.host_local",
    "loopback": "k8sx.cni.plugins.loopback",
    "portmap": "k8sx.cni.plugins.portmap",
    "flannel": "k8sx.cni.plugins.flannel",
}
PREFIX = "k8sx-"
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


def render(role: str, python: str | None = None, root: str | None = None) -> str:
    """The executable for ``role``; ``python``/``root`` None gives the checkout copy of ``plugins/``."""
    shebang = f"#!{python} -IS" if python else REPO_SHEBANG
    if len(shebang) > 127:
        raise K8sxError(f"interpreter path too long for a shebang line: {python}")
    return _TEMPLATE.format(shebang=shebang, module=PLUGINS[role], role=role, root=root)


def installed_name(role: str, reference_names: bool) -> str:
    return role if reference_names else PREFIX + role


def install(directory: str, reference_names: bool = False, python: str | None = None) -> list[str]:
    """Write every plugin executable into ``directory`` (atomically: running plugins are unaffected)."""
    python = python or sys.executable
    root = package_root()
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
    except OSError as exc:
        raise K8sxError(f"cannot create {directory}: {exc.strerror or exc}") from None
    paths = []
    for role in PLUGINS:
        dest = os.path.join(directory, installed_name(role, reference_names))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".k8sx-", dir=directory)
            with os.fdopen(fd, "w") as fh:
                fh.write(render(role, python, root))
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
        except OSError as exc:
            raise K8sxError(f"cannot install {dest}: {exc.strerror or exc}") from None
        paths.append(dest)
    return paths
