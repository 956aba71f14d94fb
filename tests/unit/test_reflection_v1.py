"""grpc.reflection.v1 as Tollgate serves it: v1alpha's protocol under the v1 package, nothing else
changed (grpcio-reflection ships only v1alpha; service/transport/reflection.py derives v1)."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from service.transport.reflection import V1_FILE, V1_SERVICE_NAME, v1_file_descriptor, v1_file_proto


def shape(proto: descriptor_pb2.FileDescriptorProto) -> dict:
    """Every message's fields and every method, with type names relative to the package."""
    def local(name):
        return name.removeprefix(f".{proto.package}.")
    messages = {m.name: [(f.name, f.number, f.type, f.label, local(f.type_name),
                          f.oneof_index if f.HasField("oneof_index") else None) for f in m.field]
                for m in proto.message_type}
    oneofs = {m.name: [o.name for o in m.oneof_decl] for m in proto.message_type}
    methods = {s.name: [(m.name, local(m.input_type), local(m.output_type), m.client_streaming, m.server_streaming)
                        for m in s.method] for s in proto.service}
    return {"messages": messages, "oneofs": oneofs, "methods": methods}


def test_v1_is_v1alpha_under_the_v1_package():
    v1alpha = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(v1alpha)
    v1 = v1_file_proto()
    assert (v1.name, v1.package, v1.syntax) == (V1_FILE, "grpc.reflection.v1", "proto3")
    assert shape(v1) == shape(v1alpha) and len(shape(v1)["messages"]) == 8
    assert b"v1alpha" not in v1.SerializeToString()
    type_names = [f.type_name for m in v1.message_type for f in m.field if f.type_name]
    type_names += [name for s in v1.service for m in s.method for name in (m.input_type, m.output_type)]
    assert type_names and all(name.startswith(".grpc.reflection.v1.") for name in type_names)
    assert v1.options.java_package == "io.grpc.reflection.v1"
    assert v1.options.go_package == "google.golang.org/grpc/reflection/grpc_reflection_v1"
    assert not v1.options.deprecated  # v1alpha's file is deprecated; v1 is its successor


def test_the_v1_file_joins_the_default_pool_once():
    first = v1_file_descriptor()
    assert v1_file_descriptor().name == first.name == V1_FILE
    service = first.services_by_name["ServerReflection"]
    assert service.full_name == V1_SERVICE_NAME
    method = service.methods_by_name["ServerReflectionInfo"]
    assert method.client_streaming and method.server_streaming
    assert method.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
