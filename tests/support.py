"""Plain helpers shared by the tests (no fixtures: those live in conftest.py).

A module of its own because several directories have a conftest.py, and ``from conftest import``
would then pick whichever was imported first.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
PREFIX = "k8sxt"


def bin_path(name: str) -> str:
    """A console script of this installation (the venv the tests run in)."""
    return os.path.join(BIN, name)


def unique(tag: str, length: int = 15) -> str:
    """A kernel-object name with the test prefix: ``k8sxt<tag><random>``, at most ``length`` chars."""
    name = f"{PREFIX}{tag}{uuid.uuid4().hex}"
    return name[:length]


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None
