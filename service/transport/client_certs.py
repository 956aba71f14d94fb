"""Services that answer only calls made with a verified client certificate.

gRPC Python cannot ask for a client certificate without requiring one, so the server listens twice
(server.py): the main port asks for none, the mutual-TLS port requires one signed by the client CA
and gRPC verifies it during the handshake. A call therefore carries an X.509 peer certificate in
its auth context only when it came in on the mutual-TLS port with a verified certificate; that is
what the gate checks. Only the services named in TOLLGATE_CLIENT_CERT_REQUIRED_FOR are wrapped, so
every other service pays nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from ..domain import errors
from .errors import rich_status, status_code_for

log = logging.getLogger("tollgate.transport")

REFUSAL = errors.Unauthenticated(
    "this service answers only calls with a client certificate: call the mutual-TLS port with a "
    "certificate signed by the configured client CA", reason="client_certificate_required")

# Keys of grpc.ServicerContext.auth_context() (grpc core's TSI/SSL peer properties).
_TRANSPORT_SECURITY_TYPE = "transport_security_type"
_PEER_CERTIFICATE = "x509_pem_cert"


def has_verified_client_certificate(context: grpc.ServicerContext) -> bool:
    """True when the call came over TLS with a peer certificate, which only the mutual-TLS
    listener asks for, and where the handshake has already verified it against the client CA."""
    auth = context.auth_context()
    # grpc returns a list of values per key; its stubs say one bytes value.
    security_type: object = auth.get(_TRANSPORT_SECURITY_TYPE)
    return security_type == [b"ssl"] and bool(auth.get(_PEER_CERTIFICATE))


class ClientCertificateRequired:
    """Stands in for a servicer when it is registered: each RPC method of `service` first refuses
    calls without a verified client certificate (UNAUTHENTICATED, reason client_certificate_required);
    anything else is the servicer's own attribute."""

    def __init__(self, servicer: object, service: ServiceDescriptor) -> None:
        self._servicer = servicer
        for method in service.methods:
            setattr(self, method.name, _gated(getattr(servicer, method.name), f"/{service.full_name}/{method.name}"))

    def __getattr__(self, name: str):
        return getattr(self._servicer, name)


def _gated(handler: Callable, method: str) -> Callable:
    @functools.wraps(handler)
    def gated(request, context: grpc.ServicerContext):
        if has_verified_client_certificate(context):
            return handler(request, context)
        # The peer address and the method only: nothing the caller sent is logged.
        peer = context.peer()
        log.warning("refused %s from %s: no client certificate", method, peer,
                    extra={"fields": {"peer": peer, "method": method, "reason": REFUSAL.reason}})
        context.abort_with_status(rich_status(status_code_for(REFUSAL), REFUSAL.message, REFUSAL.reason))

    return gated
