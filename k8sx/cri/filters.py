"""Which images a ``REPOSITORY[:TAG]`` filter selects: one rule for the server and the client.

The server applies it to ``ListImages``' filter; the client applies the same rule to what any runtime
returns, because containerd 1.6 ignores that filter and ``k8sx runtime images busybox`` should list
the same thing against every endpoint. The rule is docker's: a name without a tag selects every tag
of that repository, ``name:tag`` and ``name@digest`` select exactly, and an image id or an id prefix
(with or without ``sha256:``) selects that image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from k8sx.cri.images import reference
from k8sx.cri.images.errors import InvalidReference

_ID_PREFIX = re.compile(r"^(sha256:)?[a-f0-9]{1,64}$")


def image_matches(ref: str, image_id: str, repo_tags: Sequence[str], repo_digests: Sequence[str]) -> bool:
    """True when the image (given by its id, tags and digests) is selected by ``ref``."""
    ref = ref.strip()
    if not ref:
        return True
    if _ID_PREFIX.match(ref):
        hexpart = ref.removeprefix("sha256:")
        if image_id.removeprefix("sha256:").startswith(hexpart):
            return True
        if ref.startswith("sha256:") or len(hexpart) == 64:
            return False  # only ids look like this; not a name
    try:
        parsed = reference.parse(ref)
    except InvalidReference:
        return False
    last = ref.rsplit("/", 1)[-1]
    if parsed.digest:
        return parsed.with_digest(parsed.digest) in repo_digests
    if ":" in last.split("@", 1)[0]:
        return str(parsed) in repo_tags
    prefix = parsed.name + ":"
    return any(tag.startswith(prefix) for tag in repo_tags) or any(
        d.startswith(parsed.name + "@") for d in repo_digests)
