"""The floor: the same gRPC stack with nothing behind it.

A grpcio thread-pool server with Tollgate's defaults (16 worker threads, the same channel options,
each process on a CPU of its own) that registers `tollgate.v1.Authorization/Check` and
`envoy.service.auth.v3.Authorization/Check` and answers every call with one constant, pre-built
allow. What the load generator measures against
it is the cost of gRPC in Python on this machine (framing, HTTP/2, (de)serialisation, the thread
pool hand-off, the client side); Tollgate's numbers minus the floor's are what deciding costs.

    python -m bench.floor --port 50999     # serves on 127.0.0.1 until SIGTERM/SIGINT
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from service.affinity import pin_this_process
from service.config import Settings
from service.server import MAX_MESSAGE_BYTES

NATIVE_ALLOW = authorization_pb2.CheckResponse(allowed=True, http_status=200)
EXT_AUTHZ_ALLOW = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK),
                                                  ok_response=external_auth_pb2.OkHttpResponse())


class ConstantAuthorization(authorization_pb2_grpc.AuthorizationServicer):
    def Check(self, request, context):  # the gRPC method name
        return NATIVE_ALLOW


class ConstantExtAuthz(external_auth_pb2_grpc.AuthorizationServicer):
    def Check(self, request, context):
        return EXT_AUTHZ_ALLOW


def build_server(port: int, max_workers: int = Settings.max_workers) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_metadata_size", 64 * 1024)],
    )
    authorization_pb2_grpc.add_AuthorizationServicer_to_server(ConstantAuthorization(), server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(ConstantExtAuthz(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-workers", type=int, default=Settings.max_workers)
    parser.add_argument("--index", type=int, default=0,
                        help="which process of the floor this is: it runs on a CPU of its own, as Tollgate's "
                             "worker of that index does (service/affinity.py)")
    args = parser.parse_args(argv)
    pin_this_process(args.index)  # before the server starts a thread, as `tollgate serve` does
    server, port = build_server(args.port, args.max_workers)
    server.start()
    print(f"floor serving on 127.0.0.1:{port}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        pass
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
