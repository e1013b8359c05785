"""Generated code of the CRI API, proto package ``runtime``."""
