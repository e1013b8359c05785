"""CRI: the runtime.v1 client and server, pod sandboxes, containers (conmon + runc) and images.

Lives between the CLI and the CNI runner: pods are networked through ``k8sx.cni`` in-process.
"""
