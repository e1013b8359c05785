"""``ImageStore``: the images a node has, their metadata and the content/snapshots they hold.

WIP skeleton so the CRI servicer can code against the interface; the implementation follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Auth:
    """Credentials for one pull, shaped like the CRI ``AuthConfig``."""

    username: str = ""
    password: str = ""
    auth: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""


@dataclass
class Image:
    """One image as the CRI reports it: ``id`` is ``sha256:<config digest>``."""

    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    uid: int | None = None
    username: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    pinned: bool = False


@dataclass
class FsUsage:
    """What ``ImageFsInfo`` reports for the filesystem holding the images."""

    mountpoint: str
    used_bytes: int
    inodes_used: int
    timestamp_ns: int


class ImageStore:
    def __init__(self, root: str, registries_config: str | None = None) -> None:
        self.root = root
        self.registries_config = registries_config

    def pull(self, ref: str, auth: Auth | None = None) -> Image:
        raise NotImplementedError

    def list(self) -> list[Image]:
        raise NotImplementedError

    def get(self, ref_or_id: str) -> Image | None:
        raise NotImplementedError

    def remove(self, ref_or_id: str) -> bool:
        raise NotImplementedError

    def fs_info(self) -> FsUsage:
        raise NotImplementedError

    def import_archive(self, path: str) -> list[Image]:
        raise NotImplementedError

    def layers(self, image_id: str) -> list[str]:
        raise NotImplementedError
