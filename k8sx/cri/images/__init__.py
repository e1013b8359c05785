"""The image store behind the CRI ImageService: pull from OCI registries, keep content, unpack layers safely.

Modules: ``reference`` (names), ``registry`` (distribution client), ``content`` (blobs by digest),
``unpack`` (the security boundary), ``snapshots`` (one directory per layer chain), ``store``
(``ImageStore``: metadata, refcounts, import), ``build`` (a tiny image builder for demos and tests).
"""
