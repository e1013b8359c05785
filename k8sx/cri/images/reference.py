"""Image references parsed and normalised the way containerd (and docker/distribution) do.

The CRI reports ``repoTags``/``repoDigests`` in the fully qualified form, so ``busybox`` must become
``docker.io/library/busybox:latest`` and ``localhost:5000/x@sha256:...`` must keep its port. Keeping
the grammar in one module means the store, the registry client and the CLI agree on names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from k8sx.cri.images.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN_COMPONENT = re.compile(r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$")
_DOMAIN = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)"
    r"(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` (the only algorithm the store keeps), else raise."""
    if not _DIGEST.match(digest):
        raise InvalidReference(f"invalid digest {digest!r}")
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not _HEX64.match(hexpart):
        raise InvalidReference(f"unsupported digest {digest!r}: only sha256:<64 lower-case hex> is supported")
    return digest


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``domain/path[:tag][@digest]`` with ``tag`` defaulted when no digest is given."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``docker.io/library/busybox``: the repository with its registry, as repoTags/repoDigests use it."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def with_tag(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(ref: str) -> Reference:
    """Parse and normalise ``ref``; raise :class:`InvalidReference` with the reason when it is malformed."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidReference("empty image reference")
    ref = ref.strip()
    if _HEX64.match(ref):
        raise InvalidReference(f"invalid reference {ref!r}: cannot specify 64-byte hexadecimal strings")
    rest, at, digest = ref.partition("@")
    if at:
        validate_digest(digest)
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid reference {ref!r}: bad tag {tag!r}")
    if not rest:
        raise InvalidReference(f"invalid reference {ref!r}: no repository name")
    domain, path = _split_domain(rest)
    if not _DOMAIN.match(domain):
        raise InvalidReference(f"invalid reference {ref!r}: bad registry host {domain!r}")
    for comp in path.split("/"):
        if not _COMPONENT.match(comp):
            if comp.lower() != comp and _COMPONENT.match(comp.lower()):
                raise InvalidReference(f"invalid reference {ref!r}: repository name must be lowercase")
            raise InvalidReference(f"invalid reference {ref!r}: bad name component {comp!r}")
    if len(f"{domain}/{path}") > NAME_TOTAL_MAX:
        raise InvalidReference(f"invalid reference {ref!r}: name longer than {NAME_TOTAL_MAX} characters")
    if tag is None and not at:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest or None)


def normalize(ref: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest`` (the string form of :func:`parse`)."""
    return str(parse(ref))


def looks_like_reference(text: str) -> bool:
    """True when ``text`` parses as a reference (used to tell names from id prefixes)."""
    try:
        parse(text)
    except InvalidReference:
        return False
    return True
