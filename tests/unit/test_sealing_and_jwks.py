"""Sealing of HMAC secrets (Fernet) and JWK Set validation for issuer registration."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

from service.domain.model import IssuerRecord
from service.tokens import load_jwks, new_key_encryption_key, seal_secret, unseal_secret
from service.tokens.jwks import JwksCache
from tests.support.keys import generate_signing_key, jwks

SECRET = b"an-hmac-secret-of-at-least-32-bytes!!"

# --- sealing -----------------------------------------------------------------------------------


def test_new_kek_is_a_fresh_fernet_key() -> None:
    first, second = new_key_encryption_key(), new_key_encryption_key()
    assert first != second
    Fernet(first.encode())  # parses


def test_seal_unseal_round_trip() -> None:
    kek = new_key_encryption_key()
    sealed = seal_secret(SECRET, kek)
    assert isinstance(sealed, str)
    assert SECRET.decode() not in sealed
    assert seal_secret(SECRET, kek) != sealed  # random IV: sealing twice differs
    assert unseal_secret(sealed, kek) == SECRET


def test_wrong_kek_is_a_clear_value_error_without_secrets() -> None:
    kek, other = new_key_encryption_key(), new_key_encryption_key()
    sealed = seal_secret(SECRET, kek)
    with pytest.raises(ValueError) as caught:
        unseal_secret(sealed, other)
    message = str(caught.value)
    assert "key-encryption key" in message
    for secret_text in (SECRET.decode(), kek, other, sealed):
        assert secret_text not in message
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("sealed", ["", "garbage", "gAAAAAB" + "A" * 80])
def test_damaged_sealed_value_is_a_value_error(sealed: str) -> None:
    with pytest.raises(ValueError):
        unseal_secret(sealed, new_key_encryption_key())


@pytest.mark.parametrize("kek", ["", "short", "x" * 44])
def test_malformed_kek_is_a_value_error(kek: str) -> None:
    with pytest.raises(ValueError) as caught:
        seal_secret(SECRET, kek)
    assert not kek or kek not in str(caught.value)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        seal_secret(b"", new_key_encryption_key())


def test_kek_rotation_with_a_key_list() -> None:
    old, new = new_key_encryption_key(), new_key_encryption_key()
    sealed_old = seal_secret(SECRET, old)
    rotated = f"{new},{old}"
    assert unseal_secret(sealed_old, rotated) == SECRET
    sealed_new = seal_secret(SECRET, rotated)  # the first key seals
    assert unseal_secret(sealed_new, new) == SECRET
    with pytest.raises(ValueError):
        unseal_secret(sealed_new, old)


# --- load_jwks ---------------------------------------------------------------------------------


def test_load_jwks_accepts_public_rsa_ec_okp() -> None:
    keys = [generate_signing_key(alg, f"k-{alg}") for alg in ("RS256", "ES256", "EdDSA")]
    loaded = load_jwks(jwks(*keys))
    assert [key["kid"] for key in loaded["keys"]] == ["k-RS256", "k-ES256", "k-EdDSA"]
    assert [key["kty"] for key in loaded["keys"]] == ["RSA", "EC", "OKP"]


def test_load_jwks_normalizes_to_public_members() -> None:
    jwk = generate_signing_key("ES256", "k1").public_jwk()
    jwk.update(x5u="https://elsewhere.example/cert", ext=True, key_ops=["verify"])
    loaded = load_jwks({"keys": [jwk]})
    assert set(loaded["keys"][0]) == {"kty", "crv", "x", "y", "kid", "use", "alg", "key_ops"}


def test_load_jwks_wraps_a_single_jwk_and_accepts_json_text() -> None:
    jwk = generate_signing_key("EdDSA", "k1").public_jwk()
    assert load_jwks(jwk) == load_jwks(json.dumps({"keys": [jwk]}))
    assert len(load_jwks(jwk)["keys"]) == 1


def _private_jwks() -> dict[str, dict]:
    rsa_key = generate_signing_key("RS256", "k1").private_key
    return {
        "rsa-private": RSAAlgorithm.to_jwk(rsa_key, as_dict=True),
        "ec-private": ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True),
        "okp-private": OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True),
        "oct": HMACAlgorithm.to_jwk(SECRET, as_dict=True),
        "public-plus-d": {**generate_signing_key("RS256", "k1").public_jwk(), "d": "AQAB"},
    }


@pytest.mark.parametrize("name", sorted(_private_jwks()))
def test_load_jwks_refuses_private_or_symmetric_material(name: str) -> None:
    jwk = _private_jwks()[name]
    with pytest.raises(ValueError) as caught:
        load_jwks({"keys": [jwk]})
    message = str(caught.value)
    assert "private" in message
    for member in ("d", "k", "p", "q"):
        if isinstance(jwk.get(member), str) and len(jwk[member]) > 4:
            assert jwk[member] not in message


def test_load_jwks_refuses_short_rsa_keys() -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ValueError, match="2048"):
        load_jwks(RSAAlgorithm.to_jwk(short, as_dict=True))


def _public(key_alg: str, key_kid: str, /, **changes: object) -> dict:
    """The public JWK of a test key, with members changed."""
    return {**generate_signing_key(key_alg, key_kid).public_jwk(), **changes}


@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        {"keys": "nope"},
        {"nothing": 1},
        [],
        "not json",
        "[1, 2]",
        {"keys": [42]},
        {"keys": [{"kid": "a"}]},
        {"keys": [_public("ES256", "a", kty="XYZ")]},
        {"keys": [_public("ES256", "a", crv="secp256k1")]},
        {"keys": [_public("EdDSA", "a", crv="X25519")]},
        {"keys": [_public("ES256", "a", x="not-base64!")]},
        {"keys": [_public("ES256", "a", x="AAAA")]},
        {"keys": [_public("RS256", "a", alg="ES256")]},
        {"keys": [_public("ES256", "a", alg="HS256")]},
        {"keys": [_public("ES256", "a", alg="none")]},
        {"keys": [_public("ES256", "a", use="enc")]},
        {"keys": [_public("ES256", "a", key_ops=["encrypt"])]},
        {"keys": [_public("ES256", "a", kid=7)]},
        {"keys": [_public("ES256", "a"), _public("EdDSA", "a")]},
        {"keys": [_public("ES256", "a"), {k: v for k, v in _public("EdDSA", "b").items() if k != "kid"}]},
        {"keys": [_public("ES256", f"k{i}") for i in range(33)]},
    ],
)
def test_load_jwks_refusals(document: object) -> None:
    with pytest.raises(ValueError):
        load_jwks(document)  # type: ignore[arg-type]


# --- the parsed-key cache ----------------------------------------------------------------------


def _issuer(document: dict, algorithms: tuple[str, ...] = ("RS256",)) -> IssuerRecord:
    return IssuerRecord("iss-1", "https://idp", "aud", algorithms, document, None, True, "customers",
                        datetime(2030, 1, 1, tzinfo=UTC))


def test_cache_reparses_only_when_the_content_changes() -> None:
    cache = JwksCache()
    first = _issuer(jwks(generate_signing_key("RS256", "a")))
    keys = cache.keys_for(first)
    assert cache.keys_for(_issuer(json.loads(json.dumps(first.jwks)))) is keys  # equal content, new dict
    rotated = _issuer(jwks(generate_signing_key("RS256", "a"), generate_signing_key("RS256", "b")))
    assert cache.keys_for(rotated) is not keys
    assert cache.keys_for(rotated).find("b", "RS256") is not None


def test_cache_binds_keys_only_to_fitting_algorithms() -> None:
    document = jwks(generate_signing_key("RS256", "r"), generate_signing_key("ES256", "e"))
    document["keys"][0].pop("alg")  # an RSA key without alg may serve every RSA algorithm allowed
    keys = JwksCache().keys_for(_issuer(document, ("RS256", "PS256", "ES256")))
    assert keys.find("r", "RS256") is not None and keys.find("r", "PS256") is not None
    assert keys.find("r", "ES256") is None
    assert keys.find("e", "ES256") is not None and keys.find("e", "RS256") is None
    assert keys.find(None, "RS256") is None  # several keys: a kid is required


def test_cache_drops_duplicate_kids_and_private_keys() -> None:
    private = RSAAlgorithm.to_jwk(generate_signing_key("RS256", "p").private_key, as_dict=True)
    document = {"keys": [
        _public("RS256", "dup"), _public("RS256", "dup2", kid="dup"), {**private, "kid": "p"}, _public("RS256", "ok"),
    ]}
    keys = JwksCache().keys_for(_issuer(document))
    assert keys.find("dup", "RS256") is None
    assert keys.find("p", "RS256") is None
    assert keys.find("ok", "RS256") is not None


def test_cache_is_bounded() -> None:
    cache = JwksCache(capacity=2)
    document = jwks(generate_signing_key("ES256", "e"))
    for index in range(5):
        cache.keys_for(IssuerRecord(f"iss-{index}", f"https://idp/{index}", "aud", ("ES256",), document, None,
                                    True, "c", datetime(2030, 1, 1, tzinfo=UTC)))
    assert len(cache._entries) == 2
