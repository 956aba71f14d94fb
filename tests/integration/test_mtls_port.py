"""Two listeners on one server: plain TLS on the main port for native clients, and a mutual-TLS port
where Admin and the Envoy sidecars must present a client certificate (TOLLGATE_MTLS_PORT,
TOLLGATE_CLIENT_CERT_REQUIRED_FOR)."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tollgate.v1 import admin_pb2, admin_pb2_grpc, authorization_pb2, authorization_pb2_grpc

from service.config import CLIENT_CERT_SERVICES, ConfigError, load_settings
from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import ApiKeyRecord, PartnerRecord, PartnerStatus
from service.server import GATED_SERVICES, _gated
from tests.support.certs import CertificateAuthority, Issued
from tests.support.grpc_errors import expect_error
from tests.support.world import start_world, stop_world


@dataclass
class Split:
    """A running server: TLS on `world.app.port`, mutual TLS on `world.app.mtls_port`."""
    world: object
    authority: CertificateAuthority
    client: Issued
    stranger: Issued

    def channel(self, port: int, client: Issued | None = None) -> grpc.Channel:
        ca = self.authority.cert.read_bytes()
        credentials = (grpc.ssl_channel_credentials(ca, client.key.read_bytes(), client.cert.read_bytes())
                       if client else grpc.ssl_channel_credentials(ca))
        return grpc.secure_channel(f"localhost:{port}", credentials)

    @property
    def main(self) -> int:
        return self.world.app.port

    @property
    def mtls(self) -> int:
        return self.world.app.mtls_port


def split_server(tmp_path, required_for: str):
    authority = CertificateAuthority(tmp_path)
    server = authority.issue("server", server=True)
    world = start_world(f"sqlite:///{tmp_path / 't.db'}", tmp_path, tls_cert_file=server.cert,
                        tls_key_file=server.key, tls_client_ca_file=authority.cert, mtls_port=0,
                        client_cert_required_for=required_for)
    try:
        yield Split(world, authority, authority.issue("client", server=False),
                    CertificateAuthority(tmp_path, "Other CA").issue("stranger", server=False))
    finally:
        stop_world(world)


@pytest.fixture
def split(tmp_path):
    yield from split_server(tmp_path, "admin, ext_authz")


@pytest.fixture
def split_all(tmp_path):
    yield from split_server(tmp_path, ", ".join(CLIENT_CERT_SERVICES))


def native_check(channel: grpc.Channel) -> authorization_pb2.CheckResponse:
    with channel:
        return authorization_pb2_grpc.AuthorizationStub(channel).Check(
            authorization_pb2.CheckRequest(operation="health"), timeout=5)


def list_partners(channel: grpc.Channel, key: str) -> admin_pb2.ListPartnersResponse:
    with channel:
        return admin_pb2_grpc.AdminStub(channel).ListPartners(
            admin_pb2.ListPartnersRequest(), metadata=[("authorization", f"Bearer {key}")], timeout=5)


def ext_authz_check(channel: grpc.Channel) -> external_auth_pb2.CheckResponse:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/v1/users/u-active"
    with channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=5)


def seed_admin_key(world) -> str:
    key = opaque.generate(opaque.API_KEY_PREFIX)
    now = world.clock.now()
    with world.seed() as repos:
        repos.partners.add(PartnerRecord("ops", "Operations", PartnerStatus.ACTIVE, ("admin",), (), now))
        repos.api_keys.add(ApiKeyRecord(new_id("key"), "ops", opaque.digest(key), "admin", (), (), (), now))
    return key


def expect_client_certificate_required(call) -> None:
    error = expect_error(call)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "client_certificate_required")
    assert "mutual-TLS port" in error.message


def expect_handshake_refused(call) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_both_listeners_are_bound_and_distinct(split):
    assert split.mtls and split.mtls != split.main


def test_native_check_is_served_over_plain_tls_on_the_main_port(split):
    assert native_check(split.channel(split.main)).allowed
    assert native_check(split.channel(split.mtls, split.client)).allowed, "ungated services answer on both"


def test_gated_native_check_answers_only_on_the_mtls_port(split_all):
    """Native Check takes its request as bytes (a repeated one is answered from the decision
    memo without decoding it); the gate stands in front of that path too."""
    expect_client_certificate_required(lambda: native_check(split_all.channel(split_all.main)))
    first, again = (native_check(split_all.channel(split_all.mtls, split_all.client)) for _ in range(2))
    assert first.allowed and again.allowed and first.decision_id != again.decision_id
    expect_client_certificate_required(lambda: native_check(split_all.channel(split_all.main)))


def test_admin_on_the_main_port_is_refused_even_with_a_client_certificate(split, caplog):
    key = seed_admin_key(split.world)
    with caplog.at_level(logging.WARNING, logger="tollgate.transport"):
        expect_client_certificate_required(lambda: list_partners(split.channel(split.main), key))
    (refusal,) = [r for r in caplog.records if "no client certificate" in r.getMessage()]
    assert refusal.fields["method"] == "/tollgate.v1.Admin/ListPartners"
    assert refusal.fields["peer"].startswith("ipv"), "the peer address is logged"
    assert key not in refusal.getMessage() and key not in str(refusal.fields), "never the credential"
    # The main port asks for no certificate, so one the client holds is never sent and never counts.
    expect_client_certificate_required(lambda: list_partners(split.channel(split.main, split.client), key))


def test_admin_over_the_mtls_port_with_a_client_certificate_works(split):
    key = seed_admin_key(split.world)
    partners = list_partners(split.channel(split.mtls, split.client), key)
    assert "ops" in [partner.id for partner in partners.partners]


def test_the_mtls_port_refuses_at_the_handshake_without_a_certificate_of_the_client_ca(split):
    key = seed_admin_key(split.world)
    for client in (None, split.stranger):
        expect_handshake_refused(lambda client=client: list_partners(split.channel(split.mtls, client), key))
        expect_handshake_refused(lambda client=client: native_check(split.channel(split.mtls, client)))


def test_ext_authz_answers_only_on_the_mtls_port(split):
    expect_client_certificate_required(lambda: ext_authz_check(split.channel(split.main)))
    answer = ext_authz_check(split.channel(split.mtls, split.client))
    assert answer.denied_response.status.code == 401, "decided (no credential), not refused by the gate"
    expect_handshake_refused(lambda: ext_authz_check(split.channel(split.mtls, split.stranger)))


def test_health_is_served_on_both_listeners(split):
    for channel in (split.channel(split.main), split.channel(split.mtls, split.client)):
        with channel:
            for service in ("", "tollgate.v1.Admin", "envoy.service.auth.v3.Authorization"):
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_the_cli_client_reaches_the_mtls_port(split):
    def client_check(port: int, *tls: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "service", "client", "check", "--operation", "health", "--json",
             "--target", f"localhost:{port}", "--tls-ca", str(split.authority.cert), *tls],
            capture_output=True, text=True, timeout=60)

    done = client_check(split.mtls, "--tls-client-cert", str(split.client.cert),
                        "--tls-client-key", str(split.client.key))
    assert done.returncode == 0 and '"allowed": true' in done.stdout, done.stderr
    assert client_check(split.main).returncode == 0


def test_without_the_new_settings_no_service_is_wrapped():
    settings = load_settings(environ={})
    assert settings.mtls_port is None and settings.client_cert_required_for == ()
    servicer = object()
    assert all(_gated(settings, name, servicer) is servicer for name in CLIENT_CERT_SERVICES)
    assert set(GATED_SERVICES) == set(CLIENT_CERT_SERVICES)


def test_the_settings_are_read_from_the_environment(tmp_path):
    files = {name: tmp_path / name for name in ("c", "k", "ca")}
    settings = load_settings(environ={
        "TOLLGATE_TLS_CERT_FILE": str(files["c"]), "TOLLGATE_TLS_KEY_FILE": str(files["k"]),
        "TOLLGATE_TLS_CLIENT_CA_FILE": str(files["ca"]), "TOLLGATE_MTLS_PORT": "50052",
        "TOLLGATE_CLIENT_CERT_REQUIRED_FOR": " admin,ext_authz,,admin "})
    assert settings.mtls_port == 50052 and settings.client_cert_required_for == ("admin", "ext_authz")


TLS = {"TOLLGATE_TLS_CERT_FILE": "/c", "TOLLGATE_TLS_KEY_FILE": "/k"}
MTLS = {**TLS, "TOLLGATE_TLS_CLIENT_CA_FILE": "/ca"}


@pytest.mark.parametrize(("environ", "named"), [
    ({"TOLLGATE_MTLS_PORT": "50052"}, "mtls_port"),
    ({**TLS, "TOLLGATE_MTLS_PORT": "50052"}, "mtls_port"),
    ({**MTLS, "TOLLGATE_MTLS_PORT": "70000"}, "mtls_port"),
    ({**MTLS, "TOLLGATE_MTLS_PORT": "fifty"}, "TOLLGATE_MTLS_PORT"),
    ({**MTLS, "TOLLGATE_MTLS_PORT": "50051"}, "mtls_port"),
    ({**TLS, "TOLLGATE_CLIENT_CERT_REQUIRED_FOR": "admin"}, "client_cert_required_for"),
    ({"TOLLGATE_CLIENT_CERT_REQUIRED_FOR": "admin"}, "client_cert_required_for"),
    ({**MTLS, "TOLLGATE_MTLS_PORT": "50052", "TOLLGATE_CLIENT_CERT_REQUIRED_FOR": "admin,health"},
     "client_cert_required_for"),
])
def test_invalid_combinations_are_refused_naming_the_setting(environ, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=environ)


def test_a_bad_configuration_refuses_to_start_with_a_clear_message(tmp_path):
    import os

    environ = {**os.environ, **TLS, "TOLLGATE_CLIENT_CERT_REQUIRED_FOR": "admin", "TOLLGATE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "service", "serve", "--port", "0", "--metrics-port", "0"],
                          env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "client_cert_required_for needs tls_client_ca_file" in done.stderr + done.stdout
