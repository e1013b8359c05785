"""The gRPC servicers of ``k8sx runtime serve``: one module per CRI service, plus the status mapping they share.

A servicer translates protobuf requests into calls on a domain object (``ImageStore`` for images,
the runtime later) and domain objects back into protobuf; it holds no state of its own, so the
server can be assembled from any set of them (see ``k8sx.cri.server.default_services``).
"""
