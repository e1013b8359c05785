"""Streaming for the CRI: the server behind Exec/Attach/PortForward URLs and the client of such URLs.

Why a package: two transports (SPDY/3.1, WebSocket) carry two protocol families (remotecommand for
exec/attach, portforward), on the server side (``k8sx runtime serve``) and the client side
(``k8sx runtime exec/attach/port-forward``); each piece is a module here, none imports grpc.
"""
