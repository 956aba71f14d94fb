"""TLS on the gRPC port, and mutual TLS when a client CA is configured."""

import grpc
import pytest
from tollgate.v1 import authorization_pb2, authorization_pb2_grpc

from service.config import ConfigError, load_settings
from tests.support.certs import CertificateAuthority
from tests.support.world import start_world, stop_world


def health_check(port: int, credentials: grpc.ChannelCredentials | None):
    target = f"localhost:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        return authorization_pb2_grpc.AuthorizationStub(channel).Check(
            authorization_pb2.CheckRequest(operation="health"), timeout=5)


@pytest.fixture
def pki(tmp_path):
    authority = CertificateAuthority(tmp_path)
    return authority, authority.issue("server", server=True), authority.issue("client", server=False)


def test_tls_serves_only_tls(pki, tmp_path):
    authority, server, _ = pki
    world = start_world(f"sqlite:///{tmp_path / 't.db'}", tmp_path, tls_cert_file=server.cert, tls_key_file=server.key)
    try:
        trusted = grpc.ssl_channel_credentials(authority.cert.read_bytes())
        assert health_check(world.app.port, trusted).allowed
        with pytest.raises(grpc.RpcError) as plaintext:
            health_check(world.app.port, None)
        assert plaintext.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        stop_world(world)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki, tmp_path):
    authority, server, client = pki
    stranger = CertificateAuthority(tmp_path, "Other CA").issue("stranger", server=False)
    world = start_world(f"sqlite:///{tmp_path / 't.db'}", tmp_path, tls_cert_file=server.cert,
                        tls_key_file=server.key, tls_client_ca_file=authority.cert)
    try:
        ca = authority.cert.read_bytes()
        with_client = grpc.ssl_channel_credentials(ca, client.key.read_bytes(), client.cert.read_bytes())
        assert health_check(world.app.port, with_client).allowed
        for credentials in (grpc.ssl_channel_credentials(ca),
                            grpc.ssl_channel_credentials(ca, stranger.key.read_bytes(), stranger.cert.read_bytes())):
            with pytest.raises(grpc.RpcError) as refused:
                health_check(world.app.port, credentials)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        stop_world(world)


@pytest.mark.parametrize("settings", [
    {"TOLLGATE_TLS_CERT_FILE": "/c"},
    {"TOLLGATE_TLS_KEY_FILE": "/k"},
    {"TOLLGATE_TLS_CLIENT_CA_FILE": "/ca"},
])
def test_incomplete_tls_settings_are_refused(settings):
    with pytest.raises(ConfigError):
        load_settings(environ=settings)


def test_the_cli_client_speaks_mutual_tls(pki, tmp_path):
    import subprocess
    import sys

    authority, server, client = pki
    world = start_world(f"sqlite:///{tmp_path / 't.db'}", tmp_path, tls_cert_file=server.cert,
                        tls_key_file=server.key, tls_client_ca_file=authority.cert)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service", "client", "check", "--operation", "health", "--json",
             "--target", f"localhost:{world.app.port}", "--tls-ca", str(authority.cert),
             "--tls-client-cert", str(client.cert), "--tls-client-key", str(client.key)],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and '"allowed": true' in done.stdout, done.stderr
    finally:
        stop_world(world)
