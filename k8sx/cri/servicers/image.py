"""The ImageService servicer: CRI image calls mapped onto ``k8sx.cri.images.ImageStore``.

Everything about images (pulling, storing, unpacking, names) lives in the store; this module only
translates: requests into store calls, store ``Image``/``FsUsage`` into protobuf, store errors into
gRPC statuses (through ``status.rpc``). The answers follow containerd's CRI plugin, which kubelet and
crictl are tested against: ImageStatus of an absent image is an empty response rather than an
error, RemoveImage of an absent image succeeds, and the verbose info is ``{"info": <json>}`` holding
the image config and its chain id.
"""

from __future__ import annotations

import json
from typing import Any

from k8sx.cri.api.runtime.v1 import api_pb2, api_pb2_grpc
from k8sx.cri.filters import image_matches
from k8sx.cri.images.snapshots import chain_ids
from k8sx.cri.images.store import Auth, Image, ImageStore
from k8sx.cri.servicers.status import invalid, rpc, unimplemented_as_status


def image_proto(image: Image) -> Any:
    """A store ``Image`` as the CRI ``Image`` message."""
    msg = api_pb2.Image(
        id=image.id,
        repo_tags=list(image.repo_tags),
        repo_digests=list(image.repo_digests),
        size=image.size,
        username=image.username or "",
        pinned=image.pinned,
    )
    if image.uid is not None:
        msg.uid.value = image.uid
    return msg


def verbose_info(image: Image) -> dict[str, str]:
    """The ``info`` map of a verbose ImageStatus, in containerd's shape: one key holding JSON."""
    diff_ids = ((image.config or {}).get("rootfs") or {}).get("diff_ids") or []
    info: dict[str, Any] = {}
    if diff_ids:
        info["chainID"] = chain_ids(list(diff_ids))[-1]
    info["imageSpec"] = image.config or {}
    return {"info": json.dumps(info)}


def auth_of(request: Any) -> Auth | None:
    if not request.HasField("auth"):
        return None
    a = request.auth
    return Auth(username=a.username, password=a.password, auth=a.auth, identity_token=a.identity_token,
                registry_token=a.registry_token, server_address=a.server_address)


def _image_ref(request: Any, what: str) -> str:
    ref = request.image.image.strip() if request.HasField("image") else ""
    if not ref:
        raise invalid(f"{what}: an image reference is required (image.image is empty)")
    return ref


@unimplemented_as_status
class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    SERVICE = api_pb2.DESCRIPTOR.services_by_name["ImageService"]

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    @rpc
    def ListImages(self, request: Any, context: Any) -> Any:
        wanted = request.filter.image.image if request.HasField("filter") else ""
        images = [i for i in self.store.list()
                  if image_matches(wanted, i.id, i.repo_tags, i.repo_digests)]
        return api_pb2.ListImagesResponse(images=[image_proto(i) for i in images])

    @rpc
    def ImageStatus(self, request: Any, context: Any) -> Any:
        ref = _image_ref(request, "ImageStatus")
        image = self.store.get(ref)
        if image is None:
            return api_pb2.ImageStatusResponse()
        resp = api_pb2.ImageStatusResponse(image=image_proto(image))
        if request.verbose:
            resp.info.update(verbose_info(image))
        return resp

    @rpc
    def PullImage(self, request: Any, context: Any) -> Any:
        ref = _image_ref(request, "PullImage")
        image = self.store.pull(ref, auth_of(request))
        return api_pb2.PullImageResponse(image_ref=image.id)

    @rpc
    def RemoveImage(self, request: Any, context: Any) -> Any:
        self.store.remove(_image_ref(request, "RemoveImage"))  # absent: success, as the CRI asks
        return api_pb2.RemoveImageResponse()

    @rpc
    def ImageFsInfo(self, request: Any, context: Any) -> Any:
        usage = self.store.fs_info()
        fs = api_pb2.FilesystemUsage(
            timestamp=usage.timestamp_ns,
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=usage.mountpoint),
        )
        fs.used_bytes.value = usage.used_bytes
        fs.inodes_used.value = usage.inodes_used
        return api_pb2.ImageFsInfoResponse(image_filesystems=[fs])
