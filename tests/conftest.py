"""Shared fixtures: the installed commands, and network namespaces that tests create and remove.

Every kernel object a test makes carries the prefix ``k8sxt`` so that a leak is recognisable and the
clean-up below (and a human) can find it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from support import bin_path, unique


class NetnsFactory:
    """Creates named network namespaces (``ip netns add``) and removes them, links included."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def __call__(self, tag: str = "ns") -> str:
        name = unique(tag, 30)
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        self.created.append(name)
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/var/run/netns/{name}"

    def cleanup(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, stderr=subprocess.DEVNULL)
        self.created.clear()


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    """``netns("pod")`` makes a namespace named k8sxt-pod-...; all are deleted after the test."""
    if os.geteuid() != 0:
        pytest.fail("network namespace tests need root; run the suite as root (scripts/test)")
    factory = NetnsFactory()
    yield factory
    factory.cleanup()


@pytest.fixture
def k8sx_bin() -> str:
    path = bin_path("k8sx")
    assert os.path.exists(path), f"{path} missing: install the project (scripts/install)"
    return path
