"""tests/support/key_servers.py: each hostile behaviour does what it says, over real HTTP(S)."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import time

import httpx
import jwt
import pytest

from tests.support.certs import CertificateAuthority
from tests.support.key_servers import (
    KeyServer,
    MiB,
    discovery_document,
    duplicate_kid_set,
    ec_claiming_rs256_set,
    encryption_key_set,
    good_set,
    hmac_set,
    private_members_set,
    weak_rsa_set,
)
from tests.support.keys import access_token_claims


@pytest.fixture
def server():
    with KeyServer() as started:
        yield started


def client(**options) -> httpx.Client:
    return httpx.Client(timeout=options.pop("timeout", 5), trust_env=False, **options)


def eventually(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_json_with_status_and_headers_and_counts(server):
    document = discovery_document("https://idp.test", server.url("/jwks"))
    server.json("/.well-known/openid-configuration", document, headers={"Cache-Control": "max-age=60"})
    server.json("/jwks", {"error": "down"}, status=503)
    with client() as http:
        found = http.get(server.url("/.well-known/openid-configuration"))
        http.get(server.url("/.well-known/openid-configuration?x=1", host="localhost"))
        down = http.get(server.url("/jwks"))
        missing = http.get(server.url("/nothing"))
    assert found.status_code == 200 and found.json() == document
    assert found.headers["cache-control"] == "max-age=60" and found.headers["content-type"] == "application/json"
    assert down.status_code == 503 and down.json() == {"error": "down"}
    assert missing.status_code == 404
    assert server.counts() == {"/.well-known/openid-configuration": 2, "/jwks": 1, "/nothing": 1}
    assert server.requests[1].target == "/.well-known/openid-configuration?x=1"
    assert server.requests[1].headers["Host"] == f"localhost:{server.port}"
    server.reset_counts()
    assert server.count("/jwks") == 0 and server.requests == []


def test_raw_bytes_are_sent_as_they_are(server):
    server.raw("/jwks", b'{"keys": [', content_type="text/plain")
    response = httpx.get(server.url("/jwks"), timeout=5, trust_env=False)
    assert response.content == b'{"keys": [' and response.headers["content-type"] == "text/plain"


@pytest.mark.parametrize("content_length", [True, False])
def test_huge_bodies_stream_with_or_without_content_length(server, content_length):
    server.huge("/jwks", content_length=content_length)
    with client() as http, http.stream("GET", server.url("/jwks")) as response:
        if content_length:
            assert response.headers["content-length"] == str(10 * MiB)
        else:
            assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
        body = response.read()
    assert len(body) == 10 * MiB and json.loads(body) == {"keys": []}


def test_slow_body_sends_headers_at_once_then_a_byte_per_interval_and_stops_when_the_client_leaves(server):
    server.slow("/jwks", interval=0.5)
    started = time.monotonic()
    with client() as http, http.stream("GET", server.url("/jwks")) as response:
        assert response.status_code == 200 and int(response.headers["content-length"]) == 3600
        assert time.monotonic() - started < 0.45, "the headers come at once"
        chunks, received = response.iter_raw(), b""
        while len(received) < 3:
            received += next(chunks)
        assert received == b'{"k' and time.monotonic() - started >= 1.45
        assert server.live_threads() == 1
    assert eventually(lambda: server.live_threads() == 0), "the slow answer goes on after the client left"


def test_redirects_to_another_host(server):
    with KeyServer() as elsewhere:
        elsewhere.json("/jwks", good_set().jwks)
        server.redirect("/jwks", elsewhere.url("/jwks", host="localhost"))
        with client() as http:
            moved = http.get(server.url("/jwks"))
            followed = http.get(server.url("/jwks"), follow_redirects=True)
        assert moved.status_code == 302 and moved.headers["location"] == f"http://localhost:{elsewhere.port}/jwks"
        assert followed.status_code == 200 and followed.json() == good_set().jwks
        assert server.count("/jwks") == 2 and elsewhere.count("/jwks") == 1


def test_gzip_bomb_is_small_on_the_wire_and_huge_inflated(server):
    server.gzip_bomb("/jwks", inflated_size=8 * MiB)
    with client() as http:
        with http.stream("GET", server.url("/jwks")) as response:
            raw = b"".join(response.iter_raw())  # the bytes on the wire
        inflated = http.get(server.url("/jwks")).content  # httpx inflates it
    assert response.headers["content-encoding"] == "gzip" and int(response.headers["content-length"]) == len(raw)
    assert len(raw) < 16 * 1024
    assert inflated == gzip.decompress(raw) and len(inflated) == 8 * MiB and json.loads(inflated) == {"keys": []}


def test_hang_up_closes_without_an_answer(server):
    server.hang_up("/gone")
    server.hang_up("/reset", reset=True)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(server.url("/gone"), timeout=5, trust_env=False)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(server.url("/reset"), timeout=5, trust_env=False)
    assert server.count("/gone") == server.count("/reset") == 1


def test_stall_never_answers_and_ends_with_the_client(server):
    server.stall("/silent")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url("/silent"), timeout=0.3, trust_env=False)
    assert eventually(lambda: server.live_threads() == 0)


def test_close_ends_every_open_connection_quickly():
    server = KeyServer()
    server.slow("/jwks", interval=0.5)
    server.stall("/silent")
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    for connection, path in zip(connections, ["/jwks", "/silent"], strict=False):  # the third sends nothing at all
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: keys\r\n\r\n".encode())
    assert server.wait_for_count("/jwks", 1) and server.wait_for_count("/silent", 1)
    assert eventually(lambda: server.live_threads() == 3)
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 2 and server.live_threads() == 0
    for connection in connections:
        with connection:
            while connection.recv(65536):  # ends at EOF, well before the 5 s timeout
                pass


def test_https_needs_the_test_ca(tmp_path):
    ca = CertificateAuthority(tmp_path)
    with KeyServer(tls=ca.issue("keys", server=True)) as server:
        server.json("/jwks", good_set().jwks)
        assert server.url("/jwks").startswith("https://127.0.0.1:")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.url("/jwks"), timeout=5, trust_env=False)
        assert eventually(lambda: server.handshake_failures == 1)
        trusted = ssl.create_default_context(cafile=str(ca.cert))
        for host in ("127.0.0.1", "localhost"):
            response = httpx.get(server.url("/jwks", host=host), verify=trusted, timeout=5, trust_env=False)
            assert response.status_code == 200 and response.json() == good_set().jwks
        assert server.count("/jwks") == 2


def test_hostile_key_sets():
    good = good_set()
    (public,) = good.jwks["keys"]
    assert public["kty"] == "RSA" and public["use"] == "sig" and "d" not in public
    claims = access_token_claims("https://idp.test", "tollgate", "acme")
    assert jwt.decode(good.signer.sign(claims), jwt.PyJWK(public).key, algorithms=["RS256"], audience="tollgate")

    (oct_key,) = hmac_set().jwks["keys"]
    assert oct_key["kty"] == "oct" and jwt.utils.base64url_decode(oct_key["k"]) == hmac_set().signer.secret

    twins = duplicate_kid_set()
    first, second = twins.jwks["keys"]
    assert first["kid"] == second["kid"] == twins.signers[1].kid and first["n"] != second["n"]

    (enc,) = encryption_key_set().jwks["keys"]
    assert enc["use"] == "enc" and "alg" not in enc

    (ec,) = ec_claiming_rs256_set().jwks["keys"]
    assert ec["kty"] == "EC" and ec["alg"] == "RS256" and ec_claiming_rs256_set().signer.alg == "ES256"

    (weak,) = weak_rsa_set().jwks["keys"]
    assert len(jwt.utils.base64url_decode(weak["n"])) * 8 == 1024

    (leaky,) = private_members_set().jwks["keys"]
    assert {"d", "p", "q", "dp", "dq", "qi"} <= set(leaky)
