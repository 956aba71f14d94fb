"""Server reflection in both versions: grpc.reflection.v1, which grpcurl, buf curl and Postman ask
first, and the older grpc.reflection.v1alpha.

grpcio-reflection (1.85) ships only v1alpha. v1 is the same protocol under a new package: its
reflection.proto is v1alpha's with the package renamed, field for field and number for number. So
the v1 file descriptor is derived from v1alpha's (and added to the descriptor pool, so that v1 can
describe itself), and one servicer answers on both paths: their messages are identical on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME: str = v1alpha.SERVICE_NAME
METHOD = "ServerReflectionInfo"
# Newest first: the order a client should try them in.
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
# v1's file options, as in grpc's own grpc/reflection/v1/reflection.proto (v1alpha's is deprecated).
_V1_OPTIONS = {"java_package": "io.grpc.reflection.v1", "java_outer_classname": "ServerReflectionProto",
               "java_multiple_files": True, "go_package": "google.golang.org/grpc/reflection/grpc_reflection_v1"}


def v1_file_proto() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, made from v1alpha's by renaming its package."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1_PACKAGE}."

    proto.name, proto.package = V1_FILE, V1_PACKAGE
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):  # only where set: descriptor.proto fields have presence
                field.type_name = new + field.type_name[len(old):]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    proto.options.Clear()
    for option, value in _V1_OPTIONS.items():
        setattr(proto.options, option, value)
    return proto


def v1_file_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> FileDescriptor:
    """The v1 file in `pool` (the default pool): added on first use, found afterwards."""
    pool = pool or descriptor_pool.Default()
    try:
        return pool.FindFileByName(V1_FILE)
    except KeyError:
        return pool.AddSerializedFile(v1_file_proto().SerializeToString())


def enable_server_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Reflection on both versions, listing `service_names` and the two reflection services."""
    v1_file_descriptor()
    servicer = v1alpha.ReflectionServicer((*service_names, *SERVICE_NAMES))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers(tuple(grpc.method_handlers_generic_handler(name, {METHOD: handler})
                                          for name in SERVICE_NAMES))
