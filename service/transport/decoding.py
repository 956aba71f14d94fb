"""Registers services so that a request that is not a valid message is INVALID_ARGUMENT.

grpcio decodes a request before the handler runs; when the bytes do not decode it answers INTERNAL
("Exception deserializing request!") and logs a traceback. Bytes that do not decode are a malformed
call, so our services take the raw bytes and decode them in the handler instead, answering through
the one error table. The generated `add_*Servicer_to_server` functions stay the source of the
method table: they register into a stand-in for the server that rewrites each method first.

A method marked `@takes_bytes` goes further: it is handed the request's bytes and returns the
response's (native Check, which answers a repeated request without decoding it at all, and
ext_authz, which answers from its response templates' encodings) and decodes, when it needs to,
with `decode_request`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from ..domain import errors
from .errors import rich_status, status_code_for

Method = TypeVar("Method", bound=Callable)
Request = TypeVar("Request", bound=Message)


def takes_bytes(method: Method) -> Method:
    """Marks a servicer method that takes the request's bytes and returns the response's; the mark
    is an attribute, so it survives wrappers made with functools.wraps."""
    method.takes_bytes = True  # type: ignore[attr-defined]  # a marker attribute, read by takes_bytes()
    return method


def decode_request(decode: Callable[[bytes], Request], raw: bytes, method: str) -> Request:
    """`decode(raw)` (a message type's FromString), the request of `method`
    ("/package.Service/Method"); InvalidRequest when the bytes do not decode."""
    try:
        return decode(raw)
    except Exception:  # noqa: BLE001  (protobuf raises DecodeError, or others on hostile bytes)
        raise errors.InvalidRequest(f"the request of {method} is not a valid protobuf message") from None


def add_decoding_in_handler(add_to_server: Callable[[object, object], None], servicer: object,
                            server: grpc.Server) -> None:
    """As `add_to_server(servicer, server)`, with every unary method decoding its own request."""
    stand_in = _RewritingServer(server)
    add_to_server(servicer, stand_in)
    if not stand_in.registered:
        # Generated code older than grpcio 1.62 registers only generic handlers; refuse rather
        # than start without the service.
        raise RuntimeError(f"{add_to_server.__name__} registered no method handlers")


class _RewritingServer:
    def __init__(self, server: grpc.Server) -> None:
        self._server = server
        self.registered = False

    def add_generic_rpc_handlers(self, handlers) -> None:
        """The generated code registers the same table twice (generic, then by method); only the
        second call is taken, rewritten, and registered both ways."""

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        rewritten = {name: _decoding_in_handler(f"/{service_name}/{name}", handler)
                     for name, handler in method_handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, rewritten),))
        self._server.add_registered_method_handlers(service_name, rewritten)
        self.registered = True


def _decoding_in_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary is None or handler.request_deserializer is None:
        return handler  # streaming methods are not ours to rewrite
    decode, behaviour = handler.request_deserializer, handler.unary_unary
    if getattr(behaviour, "takes_bytes", False):
        return grpc.unary_unary_rpc_method_handler(behaviour)  # bytes in, bytes out

    def decoded(raw: bytes, context: grpc.ServicerContext):
        try:
            request = decode_request(decode, raw, method)
        except errors.InvalidRequest as refusal:  # outside the servicer's translate_errors
            context.abort_with_status(rich_status(status_code_for(refusal), refusal.message, refusal.reason))
        return behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(decoded, response_serializer=handler.response_serializer)
