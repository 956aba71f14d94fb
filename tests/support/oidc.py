"""A real OpenID provider for the remote-issuer tests: panva's oidc-provider (npm, pinned in
package.json), run by Node from tests/support/oidc_provider.mjs on 127.0.0.1.

    with OidcProvider(clients=[OidcClient("acme", "acme-secret-0123456789")]) as idp:
        idp.start([provider_key("RS256", "idp-1")])        # the first key signs
        token = idp.token("acme", "acme-secret-0123456789", scope="user:read")
        idp.issuer, idp.discovery_url, idp.jwks_uri        # http://127.0.0.1:PORT, ...
        idp.restart([provider_key("RS256", "idp-2"), provider_key("RS256", "idp-1")])  # rotation
        idp.token("acme", "acme-secret-0123456789")        # signed by idp-2, no scope claim
        idp.stats()                                        # {"jwks": 0, "discovery": 0, "token": 1}

Its access tokens are RFC 9068 JWTs: header {alg, typ: "at+jwt", kid}; claims jti, sub (= the
client_id), iat, exp, scope (only when scopes were granted), client_id, iss, aud (= AUDIENCE).
The JWKS is served as application/jwk-set+json; neither it nor discovery carries Cache-Control.
The signing keys are the session-cached keys of tests/support/keys.py, so a test can also sign
with the provider's own key (`provider_key(alg, kid).sign(...)`).

The request counters start at zero after start() and restart(): the harness's own readiness
request is not counted. Node and node_modules are required (`make test` installs them with npm ci);
without them the test fails, saying so, as the other Node tests do.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .keys import SigningKey, generate_signing_key
from .processes import PROJECT_ROOT, free_port

SCRIPT = PROJECT_ROOT / "tests" / "support" / "oidc_provider.mjs"
AUDIENCE = "https://api.tollgate.test"
DEFAULT_SCOPE = "user:read court-booking:write read:bookings"
START_SECONDS = 20.0  # Node + oidc-provider start in well under a second; CI machines may be slow
STOP_SECONDS = 10.0
HTTP_SECONDS = 10.0
_EXIT_PORT_IN_USE = 3  # oidc_provider.mjs's exit code when the port is taken


@dataclass(frozen=True)
class OidcClient:
    """A client-credentials client registered with the provider."""

    client_id: str
    client_secret: str
    scope: str = DEFAULT_SCOPE
    auth_method: str = "client_secret_basic"  # or "client_secret_post"

    def registration(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "client_secret": self.client_secret, "scope": self.scope,
                "token_endpoint_auth_method": self.auth_method, "grant_types": ["client_credentials"]}


DEFAULT_CLIENTS = (OidcClient("acme", "acme-secret-0123456789abcdef"),
                   OidcClient("acme-post", "acme-post-secret-0123456789", scope="user:read",
                              auth_method="client_secret_post"))


def provider_key(alg: str, kid: str) -> SigningKey:
    """The (session-cached) key of tests/support/keys.py: "RS256" (RSA 2048), "ES256" (P-256) or
    "EdDSA" (Ed25519)."""
    if alg == "HS256":
        raise ValueError("an OpenID provider publishes asymmetric keys only")
    return generate_signing_key(alg, kid)


def private_jwk(key: SigningKey) -> dict[str, Any]:
    """The private JWK (with kid, alg and use "sig") that oidc-provider signs with. key_ops is left
    out: oidc-provider would publish the private key's ["sign"] on the public key."""
    algorithm = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[key.alg]
    jwk = dict(algorithm.to_jwk(key.private_key, as_dict=True))
    jwk.pop("key_ops", None)
    jwk.update(kid=key.kid, alg=key.alg, use="sig")
    return jwk


def private_jwks(keys: Sequence[SigningKey | dict[str, Any]]) -> dict[str, Any]:
    """A private JWK Set; a dict in `keys` is taken as a ready-made private JWK."""
    return {"keys": [key if isinstance(key, dict) else private_jwk(key) for key in keys]}


def require_node_tooling() -> None:
    """Fails (never skips) when Node or oidc-provider is missing: `make test` installs them."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH; install Node.js 20+ and run `make test`", pytrace=False)
    if not (PROJECT_ROOT / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("node_modules/oidc-provider is missing: run `make test`, which installs it with npm ci",
                    pytrace=False)


class OidcProvider:
    """oidc-provider in a Node subprocess on a fixed port (kept across restarts)."""

    def __init__(self, directory: Path | None = None, *, clients: Sequence[OidcClient] = DEFAULT_CLIENTS,
                 audience: str = AUDIENCE, resource_scope: str | None = None, token_ttl: int = 300,
                 port: int | None = None) -> None:
        self._temporary: tempfile.TemporaryDirectory | None = None
        if directory is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="oidc-provider-")
            directory = Path(self._temporary.name)
        self._directory = directory
        self.clients = {client.client_id: client for client in clients}
        self.audience = audience
        self._resource_scope = resource_scope  # None: the union of the clients' scopes
        self._token_ttl = token_ttl
        self.port = port or free_port()
        self._process: subprocess.Popen | None = None
        self._log: Any = None
        self._jwks_uri: str | None = None
        self._http = httpx.Client(timeout=HTTP_SECONDS, trust_env=False)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        """As the discovery document names it (read once, at start)."""
        assert self._jwks_uri, "start() the provider first"
        return self._jwks_uri

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- life cycle --------------------------------------------------------------------------

    def start(self, keys: Sequence[SigningKey | dict[str, Any]]) -> OidcProvider:
        """Starts with this key set (the first key signs) and waits until discovery answers. A port
        just freed by stop() is reused; one briefly taken by another process is retried for 5 s."""
        require_node_tooling()
        assert not self.running, "the provider is already running; use restart()"
        keys_file = self._write("keys.json", private_jwks(keys))
        clients_file = self._write("clients.json", [client.registration() for client in self.clients.values()])
        deadline = time.monotonic() + 5
        while True:
            code = self._spawn(keys_file, clients_file)
            if code is None:
                break
            output = self._close_log()
            if code != _EXIT_PORT_IN_USE or time.monotonic() > deadline:
                raise AssertionError(f"oidc-provider did not start (exit {code}):\n{output}")
            time.sleep(0.2)
        self._jwks_uri = self._http.get(self.discovery_url).raise_for_status().json()["jwks_uri"]
        self.reset_stats()
        return self

    def stop(self) -> tuple[int | None, str]:
        """SIGTERM, then a bounded wait (kill past it). Returns the exit code and the output;
        (None, "") when it was not running."""
        process, self._process = self._process, None
        if process is None:
            return None, ""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)
        return process.returncode, self._close_log()

    def restart(self, keys: Sequence[SigningKey | dict[str, Any]]) -> OidcProvider:
        """stop() then start(keys) on the same port: a key rotation as the outside world sees it."""
        self.stop()
        return self.start(keys)

    def close(self) -> None:
        self.stop()
        self._http.close()
        if self._temporary is not None:
            self._temporary.cleanup()

    def __enter__(self) -> OidcProvider:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what tests call ---------------------------------------------------------------------

    def token_response(self, client_id: str, client_secret: str, scope: str | None = None,
                       resource: str | None = AUDIENCE, auth: str | None = None) -> httpx.Response:
        """POST /token, grant_type=client_credentials. `auth` defaults to the client's registered
        method (client_secret_basic for an unknown client); resource=None leaves the parameter out
        (the provider then defaults to the audience)."""
        method = auth or getattr(self.clients.get(client_id), "auth_method", "client_secret_basic")
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        if resource is not None:
            form["resource"] = resource
        headers = {}
        if method == "client_secret_post":
            form.update(client_id=client_id, client_secret=client_secret)
        else:  # RFC 6749 §2.3.1: form-urlencode both, then HTTP Basic
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return self._http.post(f"{self.issuer}/token", data=form, headers=headers)

    def token(self, client_id: str, client_secret: str, scope: str | None = None,
              resource: str | None = AUDIENCE, auth: str | None = None) -> str:
        """A JWT access token by client credentials (see token_response)."""
        response = self.token_response(client_id, client_secret, scope, resource, auth)
        if response.status_code != 200:
            raise AssertionError(f"token request failed: {response.status_code} {response.text}\n{self.output()}")
        return response.json()["access_token"]

    def stats(self) -> dict[str, int]:
        """{"jwks": n, "discovery": m, "token": t}: requests (any method) since start() or
        reset_stats(); discovery counts the OpenID and the RFC 8414 documents alike."""
        return self._http.get(f"{self.issuer}/__test/stats").raise_for_status().json()

    def reset_stats(self) -> None:
        self._http.delete(f"{self.issuer}/__test/stats").raise_for_status()

    def output(self) -> str:
        """What the provider printed so far (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()

    # -- inside ------------------------------------------------------------------------------

    def _write(self, name: str, document: Any) -> Path:
        path = self._directory / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private keys
        with os.fdopen(descriptor, "w") as file:
            json.dump(document, file)
        return path

    def _spawn(self, keys_file: Path, clients_file: Path) -> int | None:
        """Starts the script; None once it says "ready", else its exit code."""
        self._log = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could stall it
        command = ["node", str(SCRIPT), "--port", str(self.port), "--keys", str(keys_file),
                   "--clients", str(clients_file), "--audience", self.audience, "--token-ttl", str(self._token_ttl)]
        if self._resource_scope is not None:
            command += ["--scope", self._resource_scope]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        self._process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=self._log,
                                         stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if f"ready {self.issuer}" in self.output():
                return None
            code = self._process.poll()
            if code is not None:
                self._process = None
                return code
            time.sleep(0.05)
        code, output = self.stop()
        raise AssertionError(f"oidc-provider did not say ready within {START_SECONDS:.0f}s (exit {code}):\n{output}")

    def _close_log(self) -> str:
        output = self.output()
        if self._log is not None:
            self._log.close()
            self._log = None
        return output
