"""k8sx: one toolkit for the Kubernetes node (CRI, CNI, flannel) and API extensions (CRDs, operators).

This package root stays import-free on purpose: every console script imports it first, and the
CLI's start-up time (``k8sx --help``, every TAB completion) is part of the product.
"""

__version__ = "0.1.0"
