"""`tollgate client describe` and `tollgate client call`: any service a server exposes, through
server reflection (grpc.reflection.v1, else v1alpha), with JSON in and out and no generated code.

Descriptors go into a pool of their own, never the default one (which holds our generated files):
what is described and called is what the server says it serves, whatever the server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_database import DescriptorDatabase
from grpc_reflection.v1alpha import reflection_pb2

from ..transport.reflection import METHOD, SERVICE_NAMES
from .client import channel, credential
from .output import Column, CommandFailed, Output

_CODES = {code.value[0]: code.name for code in grpc.StatusCode}
Metadata = tuple[tuple[str, str], ...]
_SCALARS: dict[int, str] = {number: name.removeprefix("TYPE_").lower()
            for name, number in descriptor_pb2.FieldDescriptorProto.Type.items()}
METHOD_COLUMNS: list[Column] = [("method", "name"), ("request", "request"), ("response", "response"),
                                ("streaming", "streaming")]
FIELD_COLUMNS: list[Column] = [("field", "name"), ("json", "json_name"), ("number", "number"), ("type", "type"),
                               ("label", "label"), ("oneof", "oneof")]


class ReflectionDatabase(DescriptorDatabase):
    """A server's files, fetched on demand over reflection: v1 first, v1alpha when the server
    answers v1 with UNIMPLEMENTED (as grpcurl does). The two versions' messages are the same on the
    wire (v1 is v1alpha renamed), so v1alpha's classes speak both."""

    def __init__(self, opened: grpc.Channel, metadata: Metadata, timeout: float) -> None:
        super().__init__()
        self._channel, self._metadata, self._timeout = opened, metadata, timeout
        self._versions = list(SERVICE_NAMES)
        self._files: set[str] = set()

    def services(self) -> list[str]:
        answer = self._ask(reflection_pb2.ServerReflectionRequest(list_services=""), "")
        return sorted(service.name for service in answer.list_services_response.service)

    def FindFileByName(self, name: str) -> descriptor_pb2.FileDescriptorProto:  # noqa: N802  (the base's name)
        return self._find(super().FindFileByName, name, reflection_pb2.ServerReflectionRequest(file_by_filename=name))

    def FindFileContainingSymbol(self, symbol: str) -> descriptor_pb2.FileDescriptorProto:  # noqa: N802 - the base's
        return self._find(super().FindFileContainingSymbol, symbol,
                          reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))

    def _find(self, known: Callable[[str], descriptor_pb2.FileDescriptorProto], key: str,
              request: reflection_pb2.ServerReflectionRequest) -> descriptor_pb2.FileDescriptorProto:
        try:
            return known(key)
        except KeyError:
            pass
        for serialized in self._ask(request, key).file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            if proto.name not in self._files:  # the answer carries every dependency, known or not
                self._files.add(proto.name)
                self.Add(proto)
        return known(key)

    def _ask(self, request: reflection_pb2.ServerReflectionRequest,
             key: str) -> reflection_pb2.ServerReflectionResponse:
        """One request on its own stream; a NOT_FOUND answer is a KeyError, as the pool expects."""
        answer = self._exchange(request)
        if answer.HasField("error_response"):
            error = answer.error_response
            if error.error_code == grpc.StatusCode.NOT_FOUND.value[0]:
                raise KeyError(key)
            code = _CODES.get(error.error_code, "UNKNOWN")
            raise CommandFailed(f"{code}: {error.error_message}", exit_code=1, code=code)
        return answer

    def _exchange(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        while True:
            info = self._channel.stream_stream(
                f"/{self._versions[0]}/{METHOD}",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            try:
                for answer in info(iter([request]), metadata=self._metadata, timeout=self._timeout):
                    return answer
                raise CommandFailed("UNKNOWN: the server's reflection service closed without an answer", exit_code=1)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._versions.pop(0)
                if not self._versions:
                    raise CommandFailed("UNIMPLEMENTED: the server offers no reflection service "
                                        f"({' or '.join(SERVICE_NAMES)})", exit_code=1, code="UNIMPLEMENTED") from None


def _metadata(args: argparse.Namespace) -> Metadata:
    """--key/--token as the authorization header (as for Relations and Admin), then each --header."""
    value = credential(args)
    metadata = [("authorization", f"Bearer {value}")] if value else []
    for header in args.header:
        name, colon, text = header.partition(":")
        if not colon or not name.strip():
            raise CommandFailed(f"malformed --header {header!r}: use 'name: value'", reason="invalid_argument")
        metadata.append((name.strip().lower(), text.strip()))
    return tuple(metadata)


def _reflect(opened: grpc.Channel,
             args: argparse.Namespace) -> tuple[ReflectionDatabase, descriptor_pool.DescriptorPool]:
    database = ReflectionDatabase(opened, _metadata(args), args.timeout.total_seconds())
    return database, descriptor_pool.DescriptorPool(descriptor_db=database)


# -- describe ------------------------------------------------------------------------------------

Described = ServiceDescriptor | MethodDescriptor | Descriptor | EnumDescriptor


def describe(args: argparse.Namespace, out: Output) -> None:
    with channel(args) as opened:
        database, pool = _reflect(opened, args)
        if not args.symbol:
            return out.table("services", [{"name": name} for name in database.services()], [("service", "name")])
        found = _resolve(pool, args.symbol)
        if found is None:
            raise CommandFailed(f"the server describes no service, method, message or enum {args.symbol!r}",
                                reason="unknown_symbol")
    if isinstance(found, ServiceDescriptor):
        methods = [method_view(m) for m in found.methods]
        _with_rows(out, {"service": found.full_name, "file": found.file.name}, "methods", methods, METHOD_COLUMNS)
    elif isinstance(found, MethodDescriptor):
        fields = [field_view(f) for f in found.input_type.fields]
        _with_rows(out, method_view(found), "request_fields", fields, FIELD_COLUMNS,
                   [("method", "method"), *METHOD_COLUMNS[1:]])
    elif isinstance(found, Descriptor):
        _with_rows(out, {"message": found.full_name}, "fields", [field_view(f) for f in found.fields], FIELD_COLUMNS)
    else:
        values = [{"name": v.name, "number": v.number} for v in found.values]
        _with_rows(out, {"enum": found.full_name}, "values", values, [("value", "name"), ("number", "number")])


def _with_rows(out: Output, head: dict[str, Any], name: str, rows: list[dict[str, Any]], columns: list[Column],
               lines: list[Column] | None = None) -> None:
    """One JSON document, or the head's lines followed by a table."""
    if out.as_json:
        return out.record({**head, name: rows})
    out.record(head, lines)
    out.table(name.replace("_", " "), rows, columns)


def _resolve(pool: descriptor_pool.DescriptorPool, symbol: str) -> Described | None:
    """A service, a method (pkg.Service/Method or pkg.Service.Method), a message or an enum."""
    name = symbol.strip().lstrip("/")
    if "/" in name:
        service, _, method = name.partition("/")
        return _method(pool, service, method)
    for find in (pool.FindServiceByName, pool.FindMessageTypeByName, pool.FindEnumTypeByName):
        try:
            return find(name)
        except KeyError:
            pass
    service, _, method = name.rpartition(".")
    return _method(pool, service, method) if service else None


def _method(pool: descriptor_pool.DescriptorPool, service: str, method: str) -> MethodDescriptor | None:
    try:
        return pool.FindServiceByName(service).methods_by_name.get(method)
    except KeyError:
        return None


def method_view(method: MethodDescriptor) -> dict[str, Any]:
    streaming = [side for side, flag in (("client", method.client_streaming), ("server", method.server_streaming))
                 if flag]
    return {"name": method.name, "method": f"{method.containing_service.full_name}/{method.name}",
            "request": method.input_type.full_name, "response": method.output_type.full_name,
            "client_streaming": method.client_streaming, "server_streaming": method.server_streaming,
            "streaming": " and ".join(streaming)}


def field_view(field: FieldDescriptor) -> dict[str, Any]:
    oneof = field.containing_oneof
    synthetic = oneof is not None and len(oneof.fields) == 1 and oneof.name == f"_{field.name}"  # proto3 optional
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    label = "map" if is_map else "repeated" if field.is_repeated else \
        "optional" if field.has_presence and field.message_type is None and (oneof is None or synthetic) else ""
    return {"name": field.name, "json_name": field.json_name, "number": field.number, "type": _type_name(field),
            "label": label, "oneof": oneof.name if oneof is not None and not synthetic else ""}


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
            return f"map<{_type_name(key)}, {_type_name(value)}>"
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return _SCALARS.get(field.type, str(field.type))


# -- call ----------------------------------------------------------------------------------------

def call(args: argparse.Namespace, out: Output) -> None:
    document = _request_document(args.request)
    with channel(args) as opened:
        _, pool = _reflect(opened, args)
        method = _callable(pool, args.method)
        request = message_factory.GetMessageClass(method.input_type)()
        try:
            json_format.ParseDict(document, request, descriptor_pool=pool)
        except json_format.ParseError as error:
            raise CommandFailed(f"the JSON is not a valid {method.input_type.full_name}: {error}",
                                reason="invalid_argument") from None
        response_class = message_factory.GetMessageClass(method.output_type)
        path = f"/{method.containing_service.full_name}/{method.name}"
        options = {"request_serializer": lambda message: message.SerializeToString(),
                   "response_deserializer": response_class.FromString}
        metadata, timeout = _metadata(args), args.timeout.total_seconds()
        if method.server_streaming:
            for response in opened.unary_stream(path, **options)(request, metadata=metadata, timeout=timeout):
                out.document(_as_json(response, pool))
        else:
            out.document(_as_json(opened.unary_unary(path, **options)(request, metadata=metadata, timeout=timeout),
                                  pool))


def _request_document(text: str) -> dict[str, Any]:
    """The request as JSON: the argument, or standard input for `-`; checked before any call."""
    if text == "-":
        text = sys.stdin.read()
    try:
        document = json.loads(text)
    except ValueError as error:
        raise CommandFailed(f"the request is not valid JSON: {error}", reason="invalid_argument") from None
    if not isinstance(document, dict):
        raise CommandFailed("the request must be a JSON object, e.g. '{}'", reason="invalid_argument")
    return document


def _callable(pool: descriptor_pool.DescriptorPool, name: str) -> MethodDescriptor:
    found = _resolve(pool, name)
    if not isinstance(found, MethodDescriptor):
        service = name.strip().lstrip("/").partition("/")[0] if "/" in name else name.rpartition(".")[0]
        try:
            offered = f" ({service} has: {', '.join(m.name for m in pool.FindServiceByName(service).methods)})"
        except KeyError:
            offered = " (see `tollgate client describe`)"
        raise CommandFailed(f"the server has no method {name!r}{offered}", reason="unknown_method")
    if found.client_streaming:
        raise CommandFailed(f"{name} takes a stream of requests; `tollgate client call` sends one",
                            reason="unsupported_method")
    return found


def _as_json(message: Any, pool: descriptor_pool.DescriptorPool) -> dict[str, Any]:
    """The proto3 JSON mapping (lowerCamelCase names, as the request), default values included."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True, descriptor_pool=pool)
