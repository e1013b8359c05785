"""Errors of the image store, so callers (the CRI servicer, the CLI) can map each to a status or exit code.

They subclass :class:`k8sx.errors.K8sxError`: the CLI prints their message as one line, and the gRPC
servicer maps ``ImageNotFound`` to NOT_FOUND, ``InvalidReference`` to INVALID_ARGUMENT and the rest to
UNKNOWN/UNAVAILABLE as it sees fit.
"""

from __future__ import annotations

from k8sx.errors import K8sxError


class ImageError(K8sxError):
    """Base of every image-store failure."""


class InvalidReference(ImageError):
    """An image reference that does not parse (bad characters, upper case, bad digest)."""

    exit_code = 2


class ImageNotFound(ImageError):
    """No image in the store (or in the registry) matches the reference or id."""


class RegistryError(ImageError):
    """Talking to a registry failed: network, HTTP status, auth, a manifest we cannot use."""


class DigestMismatch(RegistryError):
    """Content did not hash to the digest it was requested by (a manifest, a blob or a layer's diff id)."""


class UnsafeLayer(ImageError):
    """A layer tries to write outside its root (``..``, a hardlink to a host file); the whole pull is refused."""


class ArchiveError(ImageError):
    """An import file is neither an OCI layout nor a docker-archive, or is inconsistent."""
