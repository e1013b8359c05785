"""The RuntimeService servicer. For now it answers ``Version``, which clients call to probe the endpoint.

Pods and containers arrive later in this same class; every RPC not defined here is answered with a
clean UNIMPLEMENTED status (``unimplemented_as_status``), so crictl and kubelet get a clear answer.
"""

from __future__ import annotations

from typing import Any

import k8sx
from k8sx.cri.api.runtime.v1 import api_pb2, api_pb2_grpc
from k8sx.cri.servicers.status import rpc, unimplemented_as_status

RUNTIME_NAME = "k8sx"
API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"  # what containerd and CRI-O report as ``version``


@unimplemented_as_status
class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    SERVICE = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]

    @rpc
    def Version(self, request: Any, context: Any) -> Any:
        return api_pb2.VersionResponse(version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
                                       runtime_version=k8sx.__version__, runtime_api_version=API_VERSION)
