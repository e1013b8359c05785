"""Shared bits of the CRD tests: running the CLI, the seed data and golden files."""

from __future__ import annotations

import os
import subprocess

from support import bin_path

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
GOLDEN = os.path.join(HERE, "golden")


def k8sx(*args: str, cwd: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([bin_path("k8sx"), *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          input=stdin, env=env)


def golden(name: str, text: str) -> None:
    """Compare with golden/NAME; K8SXT_UPDATE_GOLDEN=1 rewrites the file instead (then review the diff)."""
    path = os.path.join(GOLDEN, name)
    if os.environ.get("K8SXT_UPDATE_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    with open(path, encoding="utf-8") as f:
        assert text == f.read(), f"output differs from golden/{name} (K8SXT_UPDATE_GOLDEN=1 to accept)"
