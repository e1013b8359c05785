"""Generated code of the CRI API, proto package ``runtime.v1``: ``api_pb2`` and ``api_pb2_grpc``."""
