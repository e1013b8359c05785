"""The Kubernetes API emulator every test that needs an API server shares (crd, flannel, operators).

It lives in k8sx.operator.emulator because ``k8sx operator init`` also copies it into the projects it
scaffolds (their end-to-end tests run against it); this module only keeps the tests' import path.
"""

from __future__ import annotations

from k8sx.operator.emulator import ApiEmulator, emulator_class, write_kubeconfig

__all__ = ["ApiEmulator", "emulator_class", "write_kubeconfig"]
