"""How a failure inside a servicer becomes a gRPC status, in one place for every CRI service.

Domain code raises its own errors (``ImageNotFound``, ``InvalidReference``, ``K8sxError``...) and
knows nothing of gRPC; servicer methods are wrapped with :func:`rpc`, which maps the exception to a
status code and a one-line message. A client therefore always gets a status it can act on
(InvalidArgument, NotFound, ...) and the server never dies of a bad request. Unexpected exceptions
become INTERNAL with their traceback in the server's log, never in the client's output.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from k8sx.cri.images.errors import ImageNotFound, InvalidReference
from k8sx.errors import K8sxError, UsageError

log = logging.getLogger("k8sx.cri.server")

F = TypeVar("F", bound=Callable[..., Any])


class Abort(Exception):
    """Raised by servicer code to answer with ``code`` (a ``grpc.StatusCode`` name) and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Abort:
    return Abort("INVALID_ARGUMENT", message)


def not_found(message: str) -> Abort:
    return Abort("NOT_FOUND", message)


# Most specific first; other services add their own with register().
_CODES: list[tuple[type[BaseException], str]] = [
    (ImageNotFound, "NOT_FOUND"),
    (InvalidReference, "INVALID_ARGUMENT"),
    (UsageError, "INVALID_ARGUMENT"),
    (NotImplementedError, "UNIMPLEMENTED"),
    (TimeoutError, "DEADLINE_EXCEEDED"),
    (K8sxError, "UNKNOWN"),
]


def register(exc_type: type[BaseException], code: str) -> None:
    """Map ``exc_type`` (and its subclasses) to ``code``, ahead of the entries already known."""
    _CODES.insert(0, (exc_type, code))


def classify(exc: BaseException) -> tuple[str, str]:
    """(status code name, message) for an exception raised by a servicer."""
    if isinstance(exc, Abort):
        return exc.code, exc.message
    explicit = getattr(exc, "grpc_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(explicit, str):
        return explicit, message
    for exc_type, code in _CODES:
        if isinstance(exc, exc_type):
            if code == "UNIMPLEMENTED" and not str(exc):
                message = "not implemented yet"
            return code, message
    return "INTERNAL", f"internal error: {type(exc).__name__}: {exc}"


def rpc(method: F) -> F:
    """Wrap a servicer method: log it, and turn any exception into a proper gRPC status."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: Any) -> Any:
        import grpc

        start = time.monotonic()
        try:
            response = method(self, request, context)
        except Exception as exc:
            code, message = classify(exc)
            if code == "INTERNAL":
                log.exception("%s failed", name)
            else:
                log.info("%s -> %s: %s", name, code, message)
            context.abort(getattr(grpc.StatusCode, code), message)
            raise  # not reached: abort raises
        log.debug("%s ok in %.1f ms", name, (time.monotonic() - start) * 1000)
        return response

    return wrapper  # type: ignore[return-value]


def unimplemented_as_status(cls: type) -> type:
    """Answer every RPC that ``cls`` does not define with a clean UNIMPLEMENTED status.

    The generated base classes raise ``NotImplementedError``, which grpc logs with a traceback as
    an application error; a servicer that serves part of a service (the runtime, while it grows)
    should instead say plainly which call is not there yet.
    """
    service = getattr(cls, "SERVICE", None)
    if service is None:
        raise TypeError(f"{cls.__name__} needs a SERVICE attribute (the service descriptor)")
    for name in service.methods_by_name:
        if name in cls.__dict__:
            continue

        def missing(self: Any, request: Any, context: Any, _name: str = name) -> Any:
            raise Abort("UNIMPLEMENTED", f"{service.full_name}/{_name} is not implemented by k8sx yet")

        missing.__name__ = name
        setattr(cls, name, rpc(missing))
    return cls

