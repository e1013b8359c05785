"""Generated code of the CRI API (``python -m k8sx.cri.codegen``); do not edit by hand."""
