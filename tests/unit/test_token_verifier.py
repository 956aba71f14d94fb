"""TokenVerifier against in-memory repositories and real keys (RS256, ES256, EdDSA, HS256).

Every refusal asserts the exact reason and that the message never contains the credential.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.domain import opaque
from service.domain.credentials import PresentedCredential, PresentedKind
from service.domain.errors import CredentialRejected
from service.domain.model import (
    ApiKeyRecord,
    CredentialKind,
    IssuerRecord,
    PartnerRecord,
    PartnerStatus,
)
from service.domain.ports import Repositories
from service.tokens import TokenVerifier, new_key_encryption_key, seal_secret
from tests.support.keys import SigningKey, access_token_claims, generate_signing_key, jwks

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
AUD = "tollgate"
KEK = new_key_encryption_key()

RS_ISS = "https://rs.example"
ES_ISS = "https://es.example"
ED_ISS = "https://ed.example"
HS_ISS = "https://hs.example"
LEGACY_ISS = "https://legacy.example"
MIXED_ISS = "https://mixed.example"
MULTI_ISS = "https://multi.example"


# --- in-memory repositories (just what the verifier uses) ------------------------------------


class FakePartners:
    def __init__(self, partners: list[PartnerRecord]) -> None:
        self.by_id = {partner.id: partner for partner in partners}

    def get(self, partner_id: str) -> PartnerRecord | None:
        return self.by_id.get(partner_id)


class FakeApiKeys:
    def __init__(self, keys: list[ApiKeyRecord]) -> None:
        self.by_digest = {key.digest: key for key in keys}
        self.queries = 0

    def find_by_digest(self, digest: str) -> ApiKeyRecord | None:
        self.queries += 1
        return self.by_digest.get(digest)


class FakeIssuers:
    def __init__(self, issuers: list[IssuerRecord]) -> None:
        self.by_iss = {issuer.issuer: issuer for issuer in issuers}

    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        return self.by_iss.get(issuer)

    def replace_keys(self, iss: str, new_jwks: dict) -> None:
        self.by_iss[iss] = dataclasses.replace(self.by_iss[iss], jwks=new_jwks)


class FakeRevoked:
    def __init__(self) -> None:
        self.revoked: set[tuple[str, str]] = set()

    def is_revoked(self, issuer_id: str, jti: str) -> bool:
        return (issuer_id, jti) in self.revoked


class Unused:
    """Stands for repositories the verifier must never touch."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the verifier used an unexpected repository method {name}")


def _partner(partner_id: str, status: PartnerStatus = PartnerStatus.ACTIVE) -> PartnerRecord:
    return PartnerRecord(partner_id, partner_id.title(), status, ("user:read",), (), NOW - timedelta(days=30))


def _issuer(issuer_id: str, iss: str, algorithms: tuple[str, ...], **fields: Any) -> IssuerRecord:
    defaults: dict[str, Any] = dict(
        audience=AUD, jwks=None, hmac_secret_sealed=None, require_at_jwt_typ=True,
        customer_claim="customers", created_at=NOW - timedelta(days=30),
    )
    defaults.update(fields)
    return IssuerRecord(id=issuer_id, issuer=iss, algorithms=algorithms, **defaults)


def _api_key(key_id: str, partner_id: str, **fields: Any) -> tuple[str, ApiKeyRecord]:
    value = opaque.generate(opaque.API_KEY_PREFIX)
    record = ApiKeyRecord(
        id=key_id, partner_id=partner_id, digest=opaque.digest(value), name=key_id,
        grants=("user:read",), roles=("reader",), customer_numbers=("C1", "C2"),
        created_at=NOW - timedelta(days=1), **fields,
    )
    return value, record


@dataclasses.dataclass
class Env:
    repos: Repositories
    keys: dict[str, SigningKey]
    api_keys: dict[str, str]
    verifier: TokenVerifier

    @property
    def issuers(self) -> FakeIssuers:
        return self.repos.issuers  # type: ignore[return-value]

    @property
    def api_key_repo(self) -> FakeApiKeys:
        return self.repos.api_keys  # type: ignore[return-value]

    @property
    def revoked(self) -> FakeRevoked:
        return self.repos.revoked_tokens  # type: ignore[return-value]


@pytest.fixture
def env() -> Env:
    keys = {
        "rs-old": generate_signing_key("RS256", "rs-old"),
        "rs-new": generate_signing_key("RS256", "rs-new"),
        "es": generate_signing_key("ES256", "es-1"),
        "ed": generate_signing_key("EdDSA", "ed-1"),
        "hs": generate_signing_key("HS256", "hs-1"),
        "attacker": generate_signing_key("RS256", "attacker"),
    }
    issuers = [
        _issuer("iss-rs", RS_ISS, ("RS256",), jwks=jwks(keys["rs-old"], keys["rs-new"])),
        _issuer("iss-es", ES_ISS, ("ES256",), jwks=jwks(keys["es"])),
        _issuer("iss-ed", ED_ISS, ("EdDSA",), jwks=jwks(keys["ed"])),
        _issuer("iss-hs", HS_ISS, ("HS256",), hmac_secret_sealed=seal_secret(keys["hs"].secret, KEK)),
        _issuer("iss-legacy", LEGACY_ISS, ("RS256",), jwks=jwks(keys["rs-new"]), require_at_jwt_typ=False),
        _issuer("iss-mixed", MIXED_ISS, ("RS256", "HS256"), jwks=jwks(keys["rs-new"]),
                hmac_secret_sealed=seal_secret(keys["hs"].secret, KEK)),
        _issuer("iss-multi", MULTI_ISS, ("RS256", "ES256"), jwks=jwks(keys["rs-new"], keys["es"])),
    ]
    api_keys, records = {}, []
    for name, partner_id, extra in [
        ("ok", "p-active", {"expires_at": NOW + timedelta(days=1)}),
        ("expired", "p-active", {"expires_at": NOW}),
        ("revoked", "p-active", {"revoked_at": NOW - timedelta(hours=1)}),
        ("suspended", "p-suspended", {}),
        ("orphan", "p-gone", {}),
    ]:
        api_keys[name], record = _api_key(f"key-{name}", partner_id, **extra)
        records.append(record)
    repos = Repositories(
        partners=FakePartners([_partner("p-active"), _partner("p-suspended", PartnerStatus.SUSPENDED)]),
        api_keys=FakeApiKeys(records),
        issuers=FakeIssuers(issuers),
        revoked_tokens=FakeRevoked(),
        relations=Unused(),
        connect_tokens=Unused(),
    )
    return Env(repos, keys, api_keys, TokenVerifier(key_encryption_key=KEK))


def _jwt(value: str) -> PresentedCredential:
    return PresentedCredential(PresentedKind.JWT, value)


def _rejected(env: Env, presented: PresentedCredential, verifier: TokenVerifier | None = None) -> CredentialRejected:
    with pytest.raises(CredentialRejected) as caught:
        (verifier or env.verifier).verify(presented, env.repos, NOW)
    error = caught.value
    if presented.value:
        # The credential (or any sizeable part of it) never appears in what the caller sees.
        for text in (str(error), error.message, repr(error)):
            assert presented.value not in text
            assert all(part not in text for part in presented.value.split(".") if len(part) > 8)
    assert error.__cause__ is None  # no PyJWT exception (which may quote keys) is chained
    return error


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_token(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None = None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode("ascii")) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def _claims(iss: str = RS_ISS, partner_id: str = "p-active", **extra: Any) -> dict[str, Any]:
    return access_token_claims(iss, AUD, partner_id, now=NOW, **extra)


# --- API keys ----------------------------------------------------------------------------------


def test_api_key_ok(env: Env) -> None:
    result = env.verifier.verify(PresentedCredential(PresentedKind.API_KEY, env.api_keys["ok"]), env.repos, NOW)
    assert result.principal.partner_id == "p-active"
    assert result.principal.credential_id == "key-ok"
    assert result.principal.kind == CredentialKind.API_KEY
    assert result.partner.id == "p-active"
    assert (result.own_grants, result.own_roles) == (("user:read",), ("reader",))
    assert result.token_scopes is None
    assert result.customer_numbers == frozenset({"C1", "C2"})
    assert result.expires_at == NOW + timedelta(days=1)


@pytest.mark.parametrize(
    "value",
    [
        "tg_live_short",
        "not-an-api-key",
        "",
        "tg_live_" + "A" * 36,  # right length and alphabet, wrong checksum
        "tg_live_" + "!" * 36,
    ],
    ids=["short", "no-prefix", "empty", "bad-checksum", "bad-alphabet"],
)
def test_malformed_api_key_is_refused_without_a_store_query(env: Env, value: str) -> None:
    error = _rejected(env, PresentedCredential(PresentedKind.API_KEY, value))
    assert error.reason == "invalid_token"
    assert env.api_key_repo.queries == 0


def test_api_key_with_a_flipped_checksum_character_is_malformed(env: Env) -> None:
    value = env.api_keys["ok"]
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")
    assert _rejected(env, PresentedCredential(PresentedKind.API_KEY, flipped)).reason == "invalid_token"
    assert env.api_key_repo.queries == 0


@pytest.mark.parametrize(
    "name, reason",
    [
        ("unknown", "invalid_token"),
        ("expired", "token_expired"),  # expires_at == now counts as expired
        ("revoked", "token_revoked"),
        ("suspended", "token_revoked"),
        ("orphan", "invalid_token"),  # its partner does not exist
    ],
)
def test_api_key_refusals(env: Env, name: str, reason: str) -> None:
    value = opaque.generate(opaque.API_KEY_PREFIX) if name == "unknown" else env.api_keys[name]
    assert _rejected(env, PresentedCredential(PresentedKind.API_KEY, value)).reason == reason
    assert env.api_key_repo.queries == 1


# --- JWT: accepted tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_name, iss",
    [("rs-new", RS_ISS), ("rs-old", RS_ISS), ("es", ES_ISS), ("ed", ED_ISS), ("hs", HS_ISS)],
)
def test_jwt_ok(env: Env, key_name: str, iss: str) -> None:
    claims = _claims(iss, scope="user:read user:write", customers=["C1", "C9"])
    result = env.verifier.verify(_jwt(env.keys[key_name].sign(claims)), env.repos, NOW)
    issuer_id = env.issuers.find_by_issuer(iss).id
    assert result.principal.partner_id == "p-active"
    assert result.principal.credential_id == f"{issuer_id}:{claims['jti']}"
    assert result.principal.kind == CredentialKind.JWT
    assert result.partner.id == "p-active"
    assert result.token_scopes == ("user:read", "user:write")
    assert result.customer_numbers == frozenset({"C1", "C9"})
    assert result.expires_at == datetime.fromtimestamp(claims["exp"], tz=UTC)
    assert (result.own_grants, result.own_roles) == ((), ())


def test_jwt_without_jti_or_scope(env: Env) -> None:
    result = env.verifier.verify(_jwt(env.keys["rs-new"].sign(_claims(jti=None))), env.repos, NOW)
    assert result.principal.credential_id == "iss-rs:"
    assert result.token_scopes is None
    assert result.customer_numbers == frozenset()


def test_sub_is_the_fallback_partner_id(env: Env) -> None:
    token = env.keys["rs-new"].sign(_claims(client_id=None, sub="p-active"))
    assert env.verifier.verify(_jwt(token), env.repos, NOW).principal.partner_id == "p-active"


@pytest.mark.parametrize(
    "extra, scopes, customers",
    [
        ({"scope": "a b  c"}, ("a", "b", "c"), frozenset()),
        ({"scope": ""}, (), frozenset()),
        ({"scp": ["a", "b"]}, ("a", "b"), frozenset()),
        ({"scp": "a b"}, ("a", "b"), frozenset()),
        ({"scope": "a", "scp": ["ignored"]}, ("a",), frozenset()),
        ({"customers": "C1 C2"}, None, frozenset({"C1", "C2"})),
        ({"customers": ["C3"]}, None, frozenset({"C3"})),
        ({"customers": []}, None, frozenset()),
    ],
    ids=["scope-string", "scope-empty", "scp-list", "scp-string", "scope-wins", "customers-string",
         "customers-list", "customers-empty"],
)
def test_scope_and_customer_claims(env: Env, extra: dict, scopes: tuple | None, customers: frozenset) -> None:
    result = env.verifier.verify(_jwt(env.keys["rs-new"].sign(_claims(**extra))), env.repos, NOW)
    assert result.token_scopes == scopes
    assert result.customer_numbers == customers


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_access_token_typ_variants(env: Env, typ: str) -> None:
    env.verifier.verify(_jwt(env.keys["rs-new"].sign(_claims(), typ=typ)), env.repos, NOW)


@pytest.mark.parametrize("typ", [None, "JWT"])
def test_relaxed_issuer_accepts_other_typ(env: Env, typ: str | None) -> None:
    token = env.keys["rs-new"].sign(_claims(LEGACY_ISS), typ=typ)
    assert env.verifier.verify(_jwt(token), env.repos, NOW).principal.credential_id.startswith("iss-legacy:")


@pytest.mark.parametrize("seconds_late", [0, 29, 30])
def test_expiry_within_leeway_is_accepted(env: Env, seconds_late: int) -> None:
    token = env.keys["rs-new"].sign(_claims(exp=int(NOW.timestamp()) - seconds_late))
    env.verifier.verify(_jwt(token), env.repos, NOW)


@pytest.mark.parametrize("seconds_ahead", [0, 29, 30])
def test_iat_within_leeway_is_accepted(env: Env, seconds_ahead: int) -> None:
    """An issuer whose clock runs ahead by no more than the leeway is tolerated, as for nbf."""
    token = env.keys["rs-new"].sign(_claims(iat=int(NOW.timestamp()) + seconds_ahead))
    env.verifier.verify(_jwt(token), env.repos, NOW)


def test_nbf_within_leeway_is_accepted(env: Env) -> None:
    token = env.keys["rs-new"].sign(_claims(nbf=int(NOW.timestamp()) + 20))
    env.verifier.verify(_jwt(token), env.repos, NOW)


def test_audience_list_containing_ours_is_accepted(env: Env) -> None:
    token = env.keys["rs-new"].sign(_claims(aud=["other", AUD]))
    env.verifier.verify(_jwt(token), env.repos, NOW)


def test_jku_header_is_ignored(env: Env) -> None:
    token = env.keys["rs-new"].sign(_claims(), headers={"jku": "https://attacker.example/jwks.json",
                                                      "x5u": "https://attacker.example/cert.pem"})
    env.verifier.verify(_jwt(token), env.repos, NOW)


def test_token_without_kid_uses_the_only_key(env: Env) -> None:
    token = env.keys["es"].sign(_claims(ES_ISS), headers={"kid": None})
    env.verifier.verify(_jwt(token), env.repos, NOW)


def test_issuer_with_rsa_and_ec_keys_verifies_both(env: Env) -> None:
    env.verifier.verify(_jwt(env.keys["rs-new"].sign(_claims(MULTI_ISS))), env.repos, NOW)
    env.verifier.verify(_jwt(env.keys["es"].sign(_claims(MULTI_ISS))), env.repos, NOW)


# --- JWT: key rotation and caching -------------------------------------------------------------


def test_kid_rotation(env: Env) -> None:
    old_token = env.keys["rs-old"].sign(_claims())
    new_token = env.keys["rs-new"].sign(_claims())
    env.verifier.verify(_jwt(old_token), env.repos, NOW)
    env.verifier.verify(_jwt(new_token), env.repos, NOW)
    env.issuers.replace_keys(RS_ISS, jwks(env.keys["rs-new"]))  # the same verifier sees the new set
    assert _rejected(env, _jwt(old_token)).reason == "invalid_token"
    env.verifier.verify(_jwt(new_token), env.repos, NOW)


def test_parsed_keys_and_secrets_are_cached(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt as pyjwt

    import service.tokens.jwks as jwks_module
    import service.tokens.verifier as verifier_module

    built: list[Any] = []
    unsealed: list[Any] = []
    real_pyjwk, real_unseal = pyjwt.PyJWK, verifier_module.unseal_with
    monkeypatch.setattr(jwks_module.jwt, "PyJWK", lambda *a, **k: built.append(1) or real_pyjwk(*a, **k))
    monkeypatch.setattr(verifier_module, "unseal_with", lambda *a: unsealed.append(1) or real_unseal(*a))
    for _ in range(3):
        env.verifier.verify(_jwt(env.keys["rs-new"].sign(_claims())), env.repos, NOW)
        env.verifier.verify(_jwt(env.keys["hs"].sign(_claims(HS_ISS))), env.repos, NOW)
    assert len(built) == 4  # 2 keys x (validate + bind to RS256), once
    assert len(unsealed) == 1


# --- JWT: refusals -----------------------------------------------------------------------------


def _alg_none(env: Env) -> str:
    return _raw_token({"alg": "none", "typ": "at+jwt", "kid": "rs-new"}, _claims())


def _alg_none_mixed_case(env: Env) -> str:
    return _raw_token({"alg": "NoNe", "typ": "at+jwt"}, _claims())


def _alg_confusion(env: Env) -> str:
    # HS256 "signed" with the issuer's RSA public key PEM as the HMAC secret.
    pem = env.keys["rs-new"].public_pem()
    return _raw_token({"alg": "HS256", "typ": "at+jwt", "kid": "rs-new"}, _claims(),
                      lambda data: hmac.new(pem, data, hashlib.sha256).digest())


def _alg_confusion_jwk_json(env: Env) -> str:
    secret = json.dumps(env.keys["rs-new"].public_jwk()).encode()
    return _raw_token({"alg": "HS256", "typ": "at+jwt", "kid": "rs-new"}, _claims(),
                      lambda data: hmac.new(secret, data, hashlib.sha256).digest())


def _wrong_key_type_for_alg(env: Env) -> str:
    # ES256 naming the RSA key's kid on an issuer that allows both: an RSA key never verifies ES256.
    other_ec = generate_signing_key("ES256", "rs-new")
    return other_ec.sign(_claims(MULTI_ISS))


def _jku_attacker(env: Env) -> str:
    return env.keys["attacker"].sign(_claims(), headers={"jku": "https://attacker.example/jwks.json"})


def _jku_attacker_with_known_kid(env: Env) -> str:
    return env.keys["attacker"].sign(_claims(), headers={"kid": "rs-new", "jku": "https://attacker.example/k"})


def _embedded_jwk(env: Env) -> str:
    attacker = env.keys["attacker"]
    return attacker.sign(_claims(), headers={"kid": "rs-new", "jwk": attacker.public_jwk()})


def _resign(env: Env, header: dict[str, Any], claims: dict[str, Any] | None = None) -> str:
    """A correctly RS256-signed token with an arbitrary header (PyJWT refuses to encode some)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = env.keys["rs-new"].private_key
    return _raw_token(header, claims or _claims(),
                      lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def _hs_with_short_secret(env: Env) -> str:
    short = b"too-short-secret"
    env.issuers.by_iss[HS_ISS] = dataclasses.replace(
        env.issuers.by_iss[HS_ISS], hmac_secret_sealed=seal_secret(short, KEK))
    return _raw_token({"alg": "HS256", "typ": "at+jwt"}, _claims(HS_ISS),
                      lambda data: hmac.new(short, data, hashlib.sha256).digest())


def _private_key_in_record(env: Env) -> str:
    from jwt.algorithms import RSAAlgorithm

    key = env.keys["rs-new"]
    private_jwk = dict(RSAAlgorithm.to_jwk(key.private_key, as_dict=True), kid="rs-new")
    env.issuers.replace_keys(RS_ISS, {"keys": [private_jwk]})
    return key.sign(_claims())


SECONDS = int(NOW.timestamp())

JWT_REFUSALS: list[tuple[str, Callable[[Env], str], str]] = [
    ("alg-none", _alg_none, "invalid_token"),
    ("alg-none-mixed-case", _alg_none_mixed_case, "invalid_token"),
    ("alg-confusion-pem", _alg_confusion, "invalid_token"),
    ("alg-confusion-jwk", _alg_confusion_jwk_json, "invalid_token"),
    ("alg-not-allowed", lambda e: e.keys["es"].sign(_claims(RS_ISS)), "invalid_token"),
    ("wrong-key-type-for-alg", _wrong_key_type_for_alg, "invalid_token"),
    ("mixed-issuer-rs", lambda e: e.keys["rs-new"].sign(_claims(MIXED_ISS)), "invalid_token"),
    ("mixed-issuer-hs", lambda e: e.keys["hs"].sign(_claims(MIXED_ISS)), "invalid_token"),
    ("unknown-kid", lambda e: generate_signing_key("RS256", "rs-unknown").sign(_claims()), "invalid_token"),
    ("no-kid-several-keys", lambda e: e.keys["rs-new"].sign(_claims(), headers={"kid": None}), "invalid_token"),
    ("other-issuers-key", lambda e: e.keys["es"].sign(_claims(MULTI_ISS), headers={"kid": "ed-1"}), "invalid_token"),
    ("jku-attacker", _jku_attacker, "invalid_token"),
    ("jku-attacker-known-kid", _jku_attacker_with_known_kid, "invalid_token"),
    ("embedded-jwk", _embedded_jwk, "invalid_token"),
    ("private-key-in-record", _private_key_in_record, "invalid_token"),
    ("unknown-issuer", lambda e: e.keys["rs-new"].sign(_claims("https://evil.example")), "invalid_token"),
    ("no-iss", lambda e: e.keys["rs-new"].sign(_claims(iss=None)), "invalid_token"),
    ("wrong-aud", lambda e: e.keys["rs-new"].sign(_claims(aud="someone-else")), "invalid_token"),
    ("no-aud", lambda e: e.keys["rs-new"].sign(_claims(aud=None)), "invalid_token"),
    ("missing-exp", lambda e: e.keys["rs-new"].sign(_claims(exp=None)), "invalid_token"),
    ("string-exp", lambda e: e.keys["rs-new"].sign(_claims(exp=str(SECONDS + 60))), "invalid_token"),
    ("bool-exp", lambda e: e.keys["rs-new"].sign(_claims(exp=True)), "invalid_token"),
    ("huge-exp", lambda e: e.keys["rs-new"].sign(_claims(exp=10**30)), "invalid_token"),
    ("expired", lambda e: e.keys["rs-new"].sign(_claims(exp=SECONDS - 31)), "token_expired"),
    ("long-expired", lambda e: e.keys["hs"].sign(_claims(HS_ISS, exp=SECONDS - 86400)), "token_expired"),
    ("nbf-future", lambda e: e.keys["rs-new"].sign(_claims(nbf=SECONDS + 31)), "token_expired"),
    ("string-nbf", lambda e: e.keys["rs-new"].sign(_claims(nbf="soon")), "invalid_token"),
    ("iat-future", lambda e: e.keys["rs-new"].sign(_claims(iat=SECONDS + 31)), "invalid_token"),
    ("iat-far-future", lambda e: e.keys["hs"].sign(_claims(HS_ISS, iat=SECONDS + 10**9)), "invalid_token"),
    ("string-iat", lambda e: e.keys["rs-new"].sign(_claims(iat="now")), "invalid_token"),
    ("bool-iat", lambda e: e.keys["rs-new"].sign(_claims(iat=True)), "invalid_token"),
    ("unknown-partner", lambda e: e.keys["rs-new"].sign(_claims(partner_id="p-nobody")), "invalid_token"),
    ("suspended-partner", lambda e: e.keys["rs-new"].sign(_claims(partner_id="p-suspended")), "token_revoked"),
    ("no-client", lambda e: e.keys["rs-new"].sign(_claims(client_id=None)), "invalid_token"),
    ("int-client-id", lambda e: e.keys["rs-new"].sign(_claims(client_id=42, sub="p-active")), "invalid_token"),
    ("int-jti", lambda e: e.keys["rs-new"].sign(_claims(jti=7)), "invalid_token"),
    ("typ-missing", lambda e: e.keys["rs-new"].sign(_claims(), typ=None), "invalid_token"),
    ("typ-jwt", lambda e: e.keys["rs-new"].sign(_claims(), typ="JWT"), "invalid_token"),
    ("typ-int", lambda e: _resign(e, {"alg": "RS256", "kid": "rs-new", "typ": 1}), "invalid_token"),
    ("kid-int", lambda e: _resign(e, {"alg": "RS256", "kid": 1, "typ": "at+jwt"}), "invalid_token"),
    ("alg-list", lambda e: _resign(e, {"alg": ["RS256"], "kid": "rs-new", "typ": "at+jwt"}), "invalid_token"),
    ("crit", lambda e: _resign(e, {"alg": "RS256", "kid": "rs-new", "typ": "at+jwt", "crit": ["exp"], "exp": 1}),
     "invalid_token"),
    ("crit-b64", lambda e: _resign(e, {"alg": "RS256", "kid": "rs-new", "typ": "at+jwt", "crit": ["b64"],
                                       "b64": False}), "invalid_token"),
    ("scope-list", lambda e: e.keys["rs-new"].sign(_claims(scope=["a"])), "invalid_token"),
    ("scope-int", lambda e: e.keys["rs-new"].sign(_claims(scope=5)), "invalid_token"),
    ("scp-mixed-list", lambda e: e.keys["rs-new"].sign(_claims(scp=["a", 1])), "invalid_token"),
    ("customers-int", lambda e: e.keys["rs-new"].sign(_claims(customers=12)), "invalid_token"),
    ("customers-dict", lambda e: e.keys["rs-new"].sign(_claims(customers={"C1": True})), "invalid_token"),
    ("bad-signature", lambda e: e.keys["rs-new"].sign(_claims())[:-6] + "AAAAAA", "invalid_token"),
    ("hs-wrong-secret", lambda e: generate_signing_key("HS256", "other").sign(_claims(HS_ISS)), "invalid_token"),
    ("hs-short-secret", _hs_with_short_secret, "invalid_token"),
    ("payload-swapped", lambda e: _swap_payload(e), "invalid_token"),  # noqa: PLW0108 - defined below
    ("signature-not-canonical", lambda e: _non_canonical(e.keys["rs-new"].sign(_claims()), 2), "invalid_token"),
    ("payload-not-canonical", lambda e: _non_canonical(e.keys["rs-new"].sign(_claims()), 1), "invalid_token"),
    ("signature-bad-padding", lambda e: e.keys["rs-new"].sign(_claims()) + "=", "invalid_token"),
    ("aud-list-without-us", lambda e: e.keys["rs-new"].sign(_claims(aud=["a", "b"])), "invalid_token"),
    ("aud-list-not-strings", lambda e: e.keys["rs-new"].sign(_claims(aud=[AUD, 1])), "invalid_token"),
    ("aud-empty", lambda e: e.keys["rs-new"].sign(_claims(aud="")), "invalid_token"),
    ("aud-int", lambda e: e.keys["rs-new"].sign(_claims(aud=5)), "invalid_token"),
    ("int-sub", lambda e: e.keys["rs-new"].sign(_claims(sub=5)), "invalid_token"),
]


def _non_canonical(token: str, index: int) -> str:
    """The token with one segment respelled: the same bytes, a last character whose unused low
    bits are set (base64url that decodes alike but is not the canonical spelling)."""
    parts = token.split(".")
    segment = parts[index]
    if len(segment) % 4 == 0:
        raise AssertionError("the segment has no unused bits to set")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    parts[index] = segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]
    return ".".join(parts)


def _swap_payload(env: Env) -> str:
    """A valid token's signature over a different payload (privilege escalation attempt)."""
    header, _, signature = env.keys["rs-new"].sign(_claims()).split(".")
    forged = _b64(json.dumps(_claims(scope="admin")).encode())
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("make_token, reason", [(m, r) for _, m, r in JWT_REFUSALS], ids=[n for n, _, _ in JWT_REFUSALS])
def test_jwt_refusals(env: Env, make_token: Callable[[Env], str], reason: str) -> None:
    assert _rejected(env, _jwt(make_token(env))).reason == reason


def test_revoked_jti(env: Env) -> None:
    claims = _claims()
    env.revoked.revoked.add(("iss-rs", claims["jti"]))
    assert _rejected(env, _jwt(env.keys["rs-new"].sign(claims))).reason == "token_revoked"


def test_revocation_is_per_issuer(env: Env) -> None:
    claims = _claims(ES_ISS)
    env.revoked.revoked.add(("iss-rs", claims["jti"]))
    env.verifier.verify(_jwt(env.keys["es"].sign(claims)), env.repos, NOW)


@pytest.mark.parametrize("kek", [None, "", "other"], ids=["no-kek", "empty-kek", "other-kek"])
def test_hmac_issuer_needs_the_right_kek(env: Env, kek: str | None) -> None:
    verifier = TokenVerifier(key_encryption_key=new_key_encryption_key() if kek == "other" else kek)
    token = env.keys["hs"].sign(_claims(HS_ISS))
    assert _rejected(env, _jwt(token), verifier).reason == "invalid_token"


def test_hmac_issuer_without_sealed_secret(env: Env) -> None:
    env.issuers.by_iss[HS_ISS] = dataclasses.replace(env.issuers.by_iss[HS_ISS], hmac_secret_sealed=None)
    assert _rejected(env, _jwt(env.keys["hs"].sign(_claims(HS_ISS)))).reason == "invalid_token"


def test_malformed_kek_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        TokenVerifier(key_encryption_key="not-a-fernet-key")


def test_custom_leeway(env: Env) -> None:
    strict = TokenVerifier(key_encryption_key=KEK, leeway=timedelta(0))
    token = env.keys["rs-new"].sign(_claims(exp=SECONDS - 1))
    assert _rejected(env, _jwt(token), strict).reason == "token_expired"
    strict.verify(_jwt(env.keys["rs-new"].sign(_claims(exp=SECONDS))), env.repos, NOW)


# --- garbage -----------------------------------------------------------------------------------

GARBAGE = [
    "",
    "a.b",
    "a.b.c",
    "...",
    "a.b.c.d",
    "eyJhbGciOiJSUzI1NiJ9",
    "eyJhbGciOiJSUzI1NiJ9.e30.",
    _b64(b"[1,2]") + "." + _b64(b"{}") + ".",
    _b64(b'{"alg":"RS256"}') + "." + _b64(b"[]") + ".",
    _b64(b'{"alg":"RS256"}') + "." + _b64(b'{"iss":5}') + ".",
    _b64(b'{"alg":"RS256"}') + "." + _b64(b'{"iss":"' + RS_ISS.encode() + b'"') + ".",
    _b64(b'{"alg":"RS256","typ":"at+jwt","kid":"rs-new"}') + "." + _b64(b'{"iss":"' + RS_ISS.encode() + b'"}') + ".",
    secrets.token_bytes(64).decode("latin-1"),
    "\x00\x01\x02.\xff\xfe.\u2603",
    "a" * 20 * 1024,
    ("eyJhbGciOiJSUzI1NiJ9." * 1000)[:-1],
]


@pytest.mark.parametrize("value", GARBAGE, ids=[f"garbage-{i}" for i in range(len(GARBAGE))])
def test_garbage_is_invalid_token(env: Env, value: str) -> None:
    assert _rejected(env, _jwt(value)).reason == "invalid_token"
