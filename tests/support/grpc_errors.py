"""Reading a gRPC error the way a client would: code, message and the ErrorInfo reason."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class CallError:
    code: grpc.StatusCode
    message: str
    reason: str
    field: str


def call_error(error: grpc.RpcError) -> CallError:
    status = rpc_status.from_call(error)
    reason = field = ""
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, field = info.reason, info.metadata.get("field", "")
    return CallError(error.code(), error.details(), reason, field)


def expect_error(call, *args, **kwargs) -> CallError:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return call_error(error)
    raise AssertionError("the call succeeded but an error was expected")
