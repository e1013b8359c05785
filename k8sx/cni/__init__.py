"""CNI: spec types and version conversion, configuration loading, the libcni-style runner and the
plugin-side skeleton that k8sx's own plugins are built on.

Used by the CLI (``k8sx cni``), by the CRI runtime for pod networking, and by ``plugins/``.
"""
