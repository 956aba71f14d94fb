"""What the fuzz targets share: the seeded server, the genuine credentials, the recipes that turn
fuzzer bytes into requests, and the invariants every answer is held to.

Invariants (a broken one raises InvariantBroken, which libFuzzer records as a crash):

1. **In time**: every call ends within DEADLINE_SECONDS (no DEADLINE_EXCEEDED, no hang).
2. **Only documented outcomes**: native Check answers a CheckResponse, INVALID_ARGUMENT, or
   RESOURCE_EXHAUSTED exactly when the message is over 1 MiB; ext_authz always answers a
   CheckResponse with ok_response or denied_response (error_response, a 503, would mean the server
   failed on the input); ManageRelation answers a response or one of its documented errors.
   Never INTERNAL, UNKNOWN, UNAVAILABLE or a dropped connection.
3. **Allow only for a genuine credential, as its partner**. A request *carries a genuine
   credential unmodified* when the token it presents — the `Authorization` value trimmed, which
   must be `Bearer` (any case) and the token, or when that is blank the `X-API-Key` value
   trimmed — is exactly one of:
     - a seeded API key that is valid (keys `acme`, `acme-reader`, `globex`, `platform`); the
       expired and revoked keys and the suspended partner's key are never genuine;
     - a seeded JWT (one per issuer: RS256, ES256, EdDSA, HS256), or one that differs only in how
       its signature segment spells the same signature bytes in base64 (padding, unused trailing
       bits): the signed content and the signature are the same, so it proves nothing new;
     - a JWT the harness minted for this input with an issuer's real key from valid parts only:
       the issuer's alg, its kid or none (any kid for the HMAC issuer, which has one secret and
       no key ids), typ `at+jwt`, its `iss` and `aud`, an `exp` in the
       future, no `nbf` in the future, `client_id` (or `sub`) naming an active seeded partner,
       no `crit`. Other claims (scope, customer numbers, jti, iat, extra claims, however deep) and
       the ignored header fields (`jku`, `x5u`, `jwk`, `x5c`) may be anything.
   An allow for anything else is a bug, except the public operation (`health`, no explicit
   permissions), which is allowed without a principal. An allow names the credential's partner.
   ManageRelation succeeds only for a genuine caller; any other caller is UNAUTHENTICATED (or
   INVALID_ARGUMENT when no action is set).
4. **No echo**: no answer (response, error message or trailers) contains a seeded secret, a minted
   token, or any presented credential of 20+ characters that the request does not also carry in
   a field an answer may quote.
5. **No amplification**: no answer is over 64 KiB.
6. **The OAuth endpoints over HTTP** (`tests.fuzz.token_endpoint`; the hypothesis suite
   tests/integration/test_hostile_token_endpoint.py holds its answers to the same
   `assert_oauth_answer`): every request is answered in time over a connection that stays up,
   with HTTP 200, 400, 401, 403, 404 or 405 (429 only where the failure limit may apply), a JSON
   object of at most 8 KiB and `Cache-Control: no-store`; an error is one of the token service's
   RFC 6749 section 5.2 codes with its status and a description in the RFC's character set, a 401
   has `WWW-Authenticate` and a 429 `Retry-After`. A 200 needs the genuine secret of an active
   client somewhere in what the request carries, decoded every way the server might read it
   (body, percent-decoding, JSON, Basic): a token is issued as that client and its partner, a
   refresh only with its family's unspent refresh token (so each refresh token yields at most one
   200); introspection answers 200 only to an introspecting caller (the admin partner "gate"'s
   client, key or tokens), and calls a token active only when it is one this run issued, or a valid
   seeded API key. No answer (body or headers) contains a secret of the run or a credential the
   request sent, unless the request also sent it where an answer may quote it (a parameter name,
   the scope).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

import grpc
import httpx
import jwt
from google.protobuf.message import DecodeError, Message

from service.domain import opaque
from service.domain.ids import new_id
from service.domain.model import ApiKeyRecord, OAuthClientRecord, PartnerRecord, PartnerStatus
from tests.support.hostile import (  # noqa: F401 - re-exported for the targets
    DEADLINE_SECONDS,
    DOCUMENTED_REASONS,
    MAX_ANSWER_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_METADATA_BYTES,
    METADATA_MARGIN,
    TOKEN_REASONS,
    Outcome,
    b64url,
    call,
)
from tests.support.hostile import presented_token as hostile_presented_token
from tests.support.keys import SigningKey, generate_signing_key
from tests.support.world import AUDIENCE, World, start_world

MIN_ECHO_LENGTH = 20
NEVER = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                   grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.DATA_LOSS,
                   grpc.StatusCode.UNIMPLEMENTED})

# Seeded API keys (tests/support/world.py API_KEYS) -> partner; None: known to the store, never genuine.
API_KEY_PARTNERS = {"acme": "acme", "acme-reader": "acme", "globex": "globex", "platform": "platform",
                    "acme-expired": None, "acme-revoked": None, "shady": None}
ACTIVE_PARTNERS = ("acme", "globex", "platform")
ISSUERS = ("rsa", "ec", "ed", "hmac")


class InvariantBroken(AssertionError):
    """An answer broke one of the invariants in this module's docstring."""


def fail(message: str) -> None:
    raise InvariantBroken(message)


# --- the fixture -------------------------------------------------------------------------------


@dataclass
class Fixture:
    world: World
    # "@name" placeholders a corpus or recipe may use -> the live secret (keys and JWTs of this run).
    placeholders: dict[str, str]
    # genuine secret -> its partner (invariant 3)
    genuine: dict[str, str]
    # tokens minted from valid parts for the current input -> partner (cleared per input)
    minted: dict[str, str] = field(default_factory=dict)
    # every secret of the run: never in an answer
    secrets: set[str] = field(default_factory=set)
    # "@rel" / "@ct": the last relation id and connect token ManageRelation returned
    state: dict[str, str] = field(default_factory=dict)
    attacker: SigningKey | None = None

    def expand(self, text: str) -> str:
        """Replaces the @placeholders (longest first, so @acme-reader is not read as @acme)."""
        if "@" not in text:
            return text
        for name in sorted({**self.placeholders, **self.state}, key=len, reverse=True):
            if name in text:
                text = text.replace(name, self.state.get(name) or self.placeholders.get(name, ""))
        return text

    def partner_of(self, token: str | None) -> str | None:
        """The partner of a genuine credential (invariant 3), else None."""
        if not token:
            return None
        if token in self.genuine:
            return self.genuine[token]
        if token in self.minted:
            return self.minted[token]
        if token.count(".") == 2:
            signing_input, _, signature = token.rpartition(".")
            for known, partner in (*self.genuine.items(), *self.minted.items()):
                known_input, _, known_signature = known.rpartition(".")
                if known_input != signing_input:
                    continue
                decoded = _b64_bytes(signature)
                if decoded is not None and decoded == _b64_bytes(known_signature):
                    return partner
        return None


def _b64_bytes(segment: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(segment.rstrip("=") + "=" * (-len(segment.rstrip("=")) % 4))
    except (ValueError, TypeError):
        return None


def start(**settings: Any) -> Fixture:
    """A seeded server over SQLite in TOLLGATE_FUZZ_DATA_DIR (or a new temp dir); `settings`
    override the server's (e.g. client_auth_failure_burst)."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    data_dir = Path(os.environ.get("TOLLGATE_FUZZ_DATA_DIR") or tempfile.mkdtemp(prefix="tollgate-fuzz-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    world = start_world(f"sqlite:///{data_dir / 'tollgate.db'}", data_dir,
                        expiry_sweep_seconds=3600.0, health_check_seconds=3600.0, **settings)
    jwts = {"jwt-rsa": (world.jwt("rsa"), "acme"), "jwt-ec": (world.jwt("ec", "globex"), "globex"),
            "jwt-ed": (world.jwt("ed", scope="read:user"), "acme"), "jwt-hmac": (world.jwt("hmac", "platform"), "platform")}
    placeholders = {f"@{name}": world.keys[name] for name in API_KEY_PARTNERS}
    placeholders |= {f"@{name}": token for name, (token, _) in jwts.items()}
    genuine = {world.keys[name]: partner for name, partner in API_KEY_PARTNERS.items() if partner}
    genuine |= dict(jwts.values())
    fixture = Fixture(world, placeholders, genuine, secrets=set(placeholders.values()),
                      attacker=generate_signing_key("RS256", "attacker-1"))
    fixture.state = {"@rel": "", "@ct": ""}
    return fixture


# --- calling -----------------------------------------------------------------------------------


def raw_method(channel: grpc.Channel, path: str, response_type: type[Message]) -> Callable:
    """A callable sending already-serialized request bytes as they are."""
    return channel.unary_unary(path, request_serializer=None, response_deserializer=response_type.FromString)


def typed_method(channel: grpc.Channel, path: str, request_type: type[Message], response_type: type[Message]) -> Callable:
    return channel.unary_unary(path, request_serializer=request_type.SerializeToString,
                               response_deserializer=response_type.FromString)


def fuzz_message_target(path: str, request_type: type[Message], response_type: type[Message],
                        build: Callable, assert_outcome: Callable, ready: Callable[[Fixture], None]) -> None:
    """Starts the server, then fuzzes one RPC: each input is sent as the serialized request (when
    it parses) and as the request build(FuzzedDataProvider(input)) makes; assert_outcome(request,
    outcome, wire size) holds each answer to the invariants. `ready` gets the fixture first."""
    import atheris

    fx = start()
    ready(fx)
    typed = typed_method(fx.world.channel, path, request_type, response_type)
    raw = raw_method(fx.world.channel, path, response_type)

    def test_one_input(data: bytes) -> None:
        fx.minted.clear()
        sent = send(fx, typed, raw, request_type, data)
        if sent is not None:
            assert_outcome(*sent)
        fx.minted.clear()
        request = build(atheris.FuzzedDataProvider(data))
        assert_outcome(request, call(typed, request), request.ByteSize())

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def parse(message_type: type[Message], data: bytes) -> Message | None:
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    return message


def expand_message(fx: Fixture, message: Message) -> bool:
    """Replaces @placeholders in every string (and bytes) field, map values included; True when
    something changed."""
    changed = False

    def one(value):
        nonlocal changed
        if isinstance(value, bytes):
            if b"@" not in value:
                return value
            new = fx.expand(value.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        elif isinstance(value, str):
            new = fx.expand(value)
        else:
            return value
        changed = changed or new != value
        return new

    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            for key in list(value):
                if isinstance(value[key], Message):
                    changed = expand_message(fx, value[key]) or changed
                else:
                    value[key] = one(value[key])
        elif descriptor.message_type is not None:
            for item in (value if _repeated(descriptor) else [value]):
                changed = expand_message(fx, item) or changed
        elif _repeated(descriptor):
            value[:] = [one(item) for item in value]
        else:
            setattr(message, descriptor.name, one(value))
    return changed


def _repeated(descriptor) -> bool:
    return bool(descriptor.is_repeated)


def strings_in(message: Message) -> list[str]:
    """Every string value (and decoded bytes value, and map key) in a message, recursively."""
    found: list[str] = []

    def add(value):
        if isinstance(value, bytes):
            found.append(value.decode("utf-8", "replace"))
        elif isinstance(value, str):
            found.append(value)

    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            for key in value:
                add(key)
                if isinstance(value[key], Message):
                    found += strings_in(value[key])
                else:
                    add(value[key])
        elif descriptor.message_type is not None:
            for item in (value if _repeated(descriptor) else [value]):
                found += strings_in(item)
        else:
            for item in (value if _repeated(descriptor) else [value]):
                add(item)
    return found


def send(fx: Fixture, typed: Callable, raw: Callable, message_type: type[Message], data: bytes):
    """Interpretation (a): `data` as the serialized request. Returns (request, outcome, wire size),
    or None when it does not parse. Sent byte for byte unless placeholders were expanded."""
    request = parse(message_type, data)
    if request is None:
        return None
    if expand_message(fx, request):
        return request, call(typed, request), request.ByteSize()
    return request, call(raw, data), len(data)


# --- shared invariants -------------------------------------------------------------------------


def assert_in_time_and_documented(outcome: Outcome, allowed_errors: frozenset[grpc.StatusCode], *,
                                  request_bytes: int, metadata_bytes: int = 0) -> None:
    if outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED or outcome.seconds >= DEADLINE_SECONDS:
        fail(f"no answer within {DEADLINE_SECONDS}s ({outcome.seconds:.2f}s, {outcome.code})")
    if outcome.code in NEVER:
        fail(f"{outcome.code.name}: {outcome.message[:300]!r}")
    oversized = request_bytes > MAX_MESSAGE_BYTES
    if oversized and outcome.code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        fail(f"a {request_bytes}-byte message was not refused: {outcome.code}")
    if outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        if not oversized and metadata_bytes <= MAX_METADATA_BYTES - METADATA_MARGIN:
            fail(f"RESOURCE_EXHAUSTED for a {request_bytes}-byte message: {outcome.message[:200]!r}")
        return
    if outcome.code is not None:
        if outcome.code not in allowed_errors:
            fail(f"undocumented error {outcome.code.name}: {outcome.message[:300]!r}")
        if not outcome.reason:
            fail(f"{outcome.code.name} without an ErrorInfo reason")
        if len(outcome.message) > 1024:
            fail(f"a {len(outcome.message)}-character error message")
    elif outcome.response.ByteSize() > MAX_ANSWER_BYTES:
        fail(f"a {outcome.response.ByteSize()}-byte answer (amplification)")


def presented_token(authorization: str, api_key: str) -> str | None:
    """The token a request presents (invariant 3): Authorization wins unless blank or in another
    auth-scheme than Bearer (RFC 6750 section 3.1; see tests/support/hostile.presented_token)."""
    return hostile_presented_token(authorization, api_key)


def assert_no_echo(fx: Fixture, outcome: Outcome, credentials: Iterable[str], quotable: Iterable[str]) -> None:
    """Invariant 4. `quotable`: request values an answer may quote (operation, path...)."""
    answer_bytes = outcome.response.SerializeToString() if outcome.response is not None else b""
    answer_text = f"{outcome.response}" if outcome.response is not None else ""
    answer_text += outcome.message + outcome.trailers
    quotable = [q for q in quotable if q]
    candidates = set(fx.secrets) | set(fx.minted)
    for value in credentials:
        value = value.strip()
        candidates |= {value, value.partition(" ")[2].strip()}
    for secret in candidates:
        if len(secret) < MIN_ECHO_LENGTH or any(secret in q for q in quotable):
            continue
        if secret in answer_text or secret.encode("utf-8", "surrogatepass") in answer_bytes:
            fail("the answer echoes a credential")


# --- recipes: fuzzer bytes -> request parts ----------------------------------------------------

NASTY = [
    "", " ", "\x00", "\t", "\r\n", "\u202e", "\ufeff", "\u200b", "\U0010ffff", "😀", "é", "²", "١٢٣", "null",
    "NaN", "-1", "0", "9" * 40, "1e400", "{}", "[]", "'", '"', "\\", "' OR '1'='1", "%00", "%2e%2e%2f",
    "../../etc/passwd", "${jndi:ldap://x.test/a}", "{{7*7}}", "%s%n", "Bearer", "Bearer ", "tg_live_",
    "tg_live_" + "0" * 36, "tg_ct_" + "0" * 36, "a.b.c", "..", "e30.e30.", "health", "getUser", "user:read",
    "read:user", "admin", "relations:admin", "u-active", "u-pending", "o-active", "C-1", "rel_", "@rel", "@ct",
]
LONG_SIZES = [16 * 1024 - 1, 16 * 1024 + 1, 64 * 1024 + 1, 1_000_000, MAX_MESSAGE_BYTES + 1]


def text(fdp, max_length: int = 48, *, long: bool = True) -> str:
    """Hostile text: a nasty string, random code points, or (long) one character repeated past a limit."""
    kind = fdp.ConsumeIntInRange(0, 5 if long else 4)
    if kind == 0:
        return fdp.PickValueInList(NASTY)
    if kind == 1:
        return fdp.PickValueInList(NASTY) + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8))
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, max_length))
    if kind == 3:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, max_length)).decode("latin-1")
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 4)) * fdp.ConsumeIntInRange(0, 3000)
    return fdp.PickValueInList(["a", "\x00", "é", "😀", " ", "."]) * fdp.PickValueInList(LONG_SIZES)


def header_text(fdp, max_length: int = 48) -> str:
    """What gRPC metadata may carry (printable ASCII)."""
    return printable(text(fdp, max_length, long=False)) if fdp.ConsumeBool() else "a" * fdp.PickValueInList(
        [16 * 1024 + 1, 32 * 1024, 70 * 1024])


def printable(value: str) -> str:
    return "".join(c for c in value if " " <= c <= "~")


def mutate(fdp, secret: str) -> str:
    """A genuine secret changed a little: one character replaced, inserted or dropped, cut,
    doubled, upper-cased or followed by garbage."""
    if not secret:
        return text(fdp)
    position = fdp.ConsumeIntInRange(0, len(secret) - 1)
    how = fdp.ConsumeIntInRange(0, 6)
    if how == 0:
        return secret[:position] + fdp.PickValueInList(list("A0_-.=+/ ~\x00é")) + secret[position + 1:]
    if how == 1:
        return secret[:position] + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 3)) + secret[position:]
    if how == 2:
        return secret[:position] + secret[position + 1:]
    if how == 3:
        return secret[:position]
    if how == 4:
        return secret * 2
    if how == 5:
        return secret.upper()
    return secret + text(fdp, 8, long=False)


def token(fdp, fx: Fixture) -> str:
    """A token to present: a seeded secret (genuine or known-bad), a mutated one, a JWT built from
    fuzzed parts, or hostile text."""
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind <= 1:
        return fx.placeholders[fdp.PickValueInList(sorted(fx.placeholders))]
    if kind == 2:
        return mutate(fdp, fx.placeholders[fdp.PickValueInList(sorted(fx.placeholders))])
    if kind == 3:
        return jwt_from_parts(fdp, fx)
    if kind == 4:
        return "tg_live_" + fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    return text(fdp)


SCHEMES = ["Bearer ", "bearer ", "BEARER ", "Bearer  ", " Bearer ", "Bearer\t", "Basic ", "Token ", "Bearer:", ""]


def credential_fields(fdp, fx: Fixture) -> tuple[str, str]:
    """(authorization, api_key) values."""
    where = fdp.ConsumeIntInRange(0, 4)
    if where == 4:
        return "", ""
    presented = token(fdp, fx)
    scheme = fdp.PickValueInList(SCHEMES) if fdp.ConsumeIntInRange(0, 3) else text(fdp, 8, long=False) + " "
    if where <= 1:
        return scheme + presented, ""
    if where == 2:
        return "", presented
    return fdp.PickValueInList(["", " ", "Bearer", scheme + text(fdp, 16, long=False)]), presented


# --- JWTs from fuzzed parts --------------------------------------------------------------------

ABSENT = object()
ALGORITHMS = ["none", "None", "NONE", "nOnE", "HS256", "HS384", "HS512", "RS256", "RS512", "PS256", "ES256",
              "ES384", "EdDSA", "", "RS256 ", "hs256"]


class JwtRecipe:
    """Picks each part either among the values that keep the token valid or among hostile ones,
    and remembers whether every pick was a valid one (then the token is genuine: invariant 3)."""

    def __init__(self, fdp) -> None:
        self.fdp = fdp
        self.valid = True

    def pick(self, valid: list, hostile: list) -> Any:
        """A valid value three times in four (and whenever the input is used up, so short inputs
        make genuine tokens that reach the deepest checks), else a hostile one."""
        if valid and self.fdp.ConsumeIntInRange(0, 3) < 3:
            value = valid[self.fdp.ConsumeIntInRange(0, len(valid) - 1)]
        else:
            self.valid = False
            value = hostile[self.fdp.ConsumeIntInRange(0, len(hostile) - 1)]
        return value() if callable(value) else value

    def free(self, values: list) -> Any:
        value = self.fdp.PickValueInList(values)
        return value() if callable(value) else value


def nested(fdp) -> str:
    """A marker _json() replaces with arrays nested this deep (json.dumps itself would recurse)."""
    return f"__nested_{fdp.PickValueInList([2, 50, 900, 1500, 5000])}__"


def jwt_from_parts(fdp, fx: Fixture) -> str:
    """A compact JWS from fuzzed parts (invariant 3 says which ones make it genuine)."""
    recipe = JwtRecipe(fdp)
    issuer = fdp.PickValueInList(list(ISSUERS))
    signer, iss = fx.world.signers[issuer], fx.world.issuers[issuer]
    now = int(fx.world.clock.now().timestamp())
    def fuzz():
        return text(fdp, 24, long=False)
    header: dict[str, Any] = {
        "alg": recipe.pick([signer.alg], [a for a in ALGORITHMS if a != signer.alg] + [ABSENT, 0, [signer.alg], fuzz]),
        "kid": (recipe.free if signer.alg.startswith("HS") else lambda values: recipe.pick(values[:2], values[2:]))(
            [signer.kid, ABSENT, "", "rsa-2", "../../../etc/passwd", "x' OR '1'='1", 1, {"$ne": ""}, fuzz]
            + [fx.world.signers[o].kid for o in ISSUERS if o != issuer]),
        "typ": recipe.pick(["at+jwt", "application/at+jwt"], ["JWT", ABSENT, "", "at+jwt ", 1, fuzz]),
    }
    for name in fdp.PickValueInList([(), ("jku",), ("x5u",), ("jwk",), ("x5c",), ("jku", "x5u", "jwk")]):
        header[name] = {"jku": "https://attacker.test/jwks.json", "x5u": "https://attacker.test/cert.pem",
                        "jwk": fx.attacker.public_jwk(), "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOC"]}[name]
    if fdp.ConsumeIntInRange(0, 15) == 15:
        header["crit"] = recipe.pick([], [["exp"], [], "exp"])
    partner = recipe.pick(list(ACTIVE_PARTNERS), ["shady", "nobody", "", fuzz])
    claims: dict[str, Any] = {
        "iss": recipe.pick([iss], [iss + "/", "", 1, [iss], fuzz, ABSENT]
                           + [fx.world.issuers[o] for o in ISSUERS if o != issuer]),
        "aud": recipe.pick([AUDIENCE, [AUDIENCE], [AUDIENCE, "https://other.test"]],
                           ["https://other.test", "", [], 1, ABSENT, fuzz]),
        "exp": recipe.pick([now + 300, now + 60.5], [ABSENT, None, now - 3600, str(now + 300), True, {}, 1e30, 10 ** 30,
                                                     float("nan"), float("inf"), -float("inf"), -1, 2 ** 63, lambda: nested(fdp)]),
        "iat": recipe.pick([now, ABSENT], ["x", now + 10 ** 9, float("nan"), lambda: nested(fdp)]),
        "jti": recipe.free([uuid.uuid4().hex, ABSENT, "", fuzz]),
        "scope": recipe.free([ABSENT, "read:user", "user:read user:write", "admin", "relations:admin", fuzz]),
        "customer_numbers": recipe.free([ABSENT, ["C-1"], ["C-1", "C-9"], fuzz]),
    }
    if fdp.ConsumeBool():
        claims["nbf"] = recipe.pick([now - 10], [now + 3600, "x", float("nan")])
    if fdp.ConsumeIntInRange(0, 3) == 0:  # sub as the fallback client
        claims["sub"], claims["client_id"] = partner, ABSENT
    else:
        claims["client_id"] = partner
    if fdp.ConsumeIntInRange(0, 3) == 0:
        claims["x-" + printable(fuzz())] = recipe.free([lambda: nested(fdp), fuzz, "x" * 8000, {"a": {"b": None}}])
    header_bytes = _json({k: v for k, v in header.items() if v is not ABSENT})
    payload_bytes = _json({k: v for k, v in claims.items() if v is not ABSENT})
    encoding = recipe.pick([None], ["raw-header", "raw-payload", "array", "latin-1"])
    if encoding == "raw-header":
        header_bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    elif encoding == "raw-payload":
        payload_bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    elif encoding == "array":
        payload_bytes = b"[" + payload_bytes + b"]"
    elif encoding == "latin-1":
        payload_bytes = payload_bytes[:-1] + b',"n":"\xe9"}'
    signing_input = f"{b64url(header_bytes)}.{b64url(payload_bytes)}".encode("ascii")
    signature = recipe.pick([lambda: _sign(signer, signing_input)], [
        lambda: _hmac(signer.public_pem() if signer.private_key else b"x" * 32, signing_input),
        lambda: _sign(fx.attacker, signing_input),
        lambda: _sign(fx.world.signers[fdp.PickValueInList([o for o in ISSUERS if o != issuer])], signing_input),
        b"", lambda: fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))])
    result = f"{signing_input.decode('ascii')}.{b64url(signature)}"
    if recipe.valid:  # genuine before tampering; Fixture.partner_of also knows its signature's other spellings
        fx.minted[result] = partner
    return _tamper(fdp, recipe, result)


def _tamper(fdp, recipe: JwtRecipe, token: str) -> str:
    how = recipe.pick([None], ["cut", "pad", "std-alphabet", "space", "segment", "drop", "zwsp", "flip"])
    if how is None:
        return token
    parts = token.split(".")
    index = fdp.ConsumeIntInRange(0, 2)
    if how == "cut":
        parts[index] = parts[index][: max(0, len(parts[index]) - fdp.ConsumeIntInRange(1, 4))]
    elif how == "pad":
        parts[index] += "=" * fdp.ConsumeIntInRange(1, 3)
    elif how == "std-alphabet":
        parts[index] = parts[index].replace("-", "+").replace("_", "/")
    elif how == "space":
        position = fdp.ConsumeIntInRange(0, len(parts[index]))
        parts[index] = parts[index][:position] + fdp.PickValueInList([" ", "\t", "\n", "\xa0"]) + parts[index][position:]
    elif how == "segment":
        parts.append(fdp.PickValueInList(["", "e30", parts[2]]))
    elif how == "drop":
        del parts[index]
    elif how == "zwsp":
        parts[2] += "\u200b"
    else:
        return mutate(fdp, token)
    return ".".join(parts)


def _json(value: Any) -> bytes:
    """Compact JSON (NaN and Infinity written as such), with the nested() markers expanded."""
    encoded = json.dumps(value, separators=(",", ":"))
    return re.sub(r'"__nested_(\d{1,4})__"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), encoded).encode()


def _sign(signer: SigningKey, signing_input: bytes) -> bytes:
    algorithm = jwt.get_algorithm_by_name(signer.alg)
    return algorithm.sign(signing_input, signer.secret if signer.alg == "HS256" else signer.private_key)


def _hmac(secret: bytes, signing_input: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


# --- the ext_authz public-route rule (independent of the route table) ---------------------------


def is_public_http(method: str, path: str, operation_extension: str) -> bool:
    """Whether the example policy decides this HTTP request as the public operation `health`."""
    if operation_extension:
        return operation_extension == "health"
    bare = path.partition("?")[0].partition("#")[0].strip("/")
    return method.upper() == "GET" and [unquote(s) for s in bare.split("/")] == ["health"]


# --- the OAuth endpoints over HTTP (invariant 6) -------------------------------------------------
# Shared by tests.fuzz.token_endpoint (bytes from libFuzzer, through FuzzedChooser) and the
# hypothesis suite tests/integration/test_hostile_token_endpoint.py (draws, through its Drawn): one
# recipe (oauth_request) and one oracle (assert_oauth_answer), two drivers. A chooser has pick,
# number, text and raw.

OAUTH_PATHS = ("/oauth/token", "/oauth/revoke", "/oauth/introspect")
DISCOVERY_PATHS = ("/.well-known/jwks.json", "/.well-known/oauth-authorization-server")
# RFC 6749 section 5.2 and the token service's additions (docs: service/domain/oauth.py) -> status.
OAUTH_ERRORS = {"invalid_request": 400, "invalid_client": 401, "invalid_grant": 400, "unauthorized_client": 400,
                "unsupported_grant_type": 400, "invalid_scope": 400, "unsupported_token_type": 400,
                "insufficient_scope": 403, "temporarily_unavailable": 429}
# Unknown paths (404) and methods (405) are answered invalid_request in the same shape.
OAUTH_STATUSES = frozenset({200, 400, 401, 403, 404, 405})
# A token answer is about a kilobyte; far more would be the request echoed back.
MAX_OAUTH_ANSWER_BYTES = 8 * 1024
# RFC 6749 section 5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
OAUTH_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,300}")
CHALLENGE = re.compile(r'(Basic|Bearer) realm="[\x20\x21\x23-\x7e]*"')
# The access-token claim naming the refresh-token family it descends from.
FAMILY_CLAIM = "rt_family"
# Headers the HTTP client derives from the body and the URL; a recipe never sets them itself (nor
# Upgrade: an h2c upgrade is refused by uvicorn's parser, test_hostile_token_endpoint section 2).
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection", "upgrade"})
SECRET_PARAMETERS = ("client_secret", "refresh_token", "token", "assertion", "password")

# Seeded OAuth clients: id -> (partner, refresh tokens on, revoked). Partner "gate" holds the admin
# grant, so its client, its API key ("gate-admin") and its client's tokens may introspect; partner
# "shady" is suspended (tests/support/world.py), so its client never authenticates.
OAUTH_CLIENTS = {
    "cli_fuzz": ("acme", True, False),
    "cli_plain": ("globex", False, False),
    "cli_gate": ("gate", False, False),
    "cli_revoked": ("acme", True, True),
    "cli_shady": ("shady", False, False),
}
INTROSPECTING_CLIENTS = frozenset({"cli_gate"})
RECENT_TOKENS = 256


@dataclass
class OAuthLedger:
    """The token service's genuine parties and everything it issued in this run: what its answers
    are held to (invariant 6). The oracle records each token it sees issued."""

    clients: dict[str, str]  # active client id -> secret
    dead_clients: dict[str, str]  # revoked, or of a suspended partner -> secret: never authenticated
    client_partners: dict[str, str]
    introspectors: set[str]  # credentials that may introspect: client secrets, API keys, access tokens
    api_keys: dict[str, str]  # valid seeded API key -> partner
    other_tokens: list[str]  # credentials that are no tokens of ours: JWTs of other issuers, dead keys
    access_tokens: dict[str, str] = field(default_factory=dict)  # issued -> client id
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # issued -> client id
    live_refresh: dict[str, str] = field(default_factory=dict)  # family -> its unspent refresh token
    last_access: dict[str, str] = field(default_factory=dict)  # client id -> its latest access token
    last_refresh: dict[str, str] = field(default_factory=dict)  # client id -> its latest refresh token
    recent: list[str] = field(default_factory=list)  # the latest issued tokens (echo scan)

    def secret_of(self, client_id: str) -> str | None:
        return self.clients.get(client_id) or self.dead_clients.get(client_id)

    def fixed_secrets(self) -> set[str]:
        return {*self.clients.values(), *self.dead_clients.values(), *self.api_keys, *self.other_tokens}

    def spent_refresh_tokens(self) -> list[str]:
        live = set(self.live_refresh.values())
        return [token for token in list(self.refresh_tokens)[-RECENT_TOKENS:] if token not in live]

    def record(self, client_id: str, access: str, refresh: str, family: str | None) -> None:
        self.access_tokens[access] = client_id
        self.last_access[client_id] = access
        self.recent.append(access)
        if client_id in INTROSPECTING_CLIENTS:
            self.introspectors.add(access)
        if refresh:
            self.refresh_tokens[refresh] = client_id
            self.last_refresh[client_id] = refresh
            self.recent.append(refresh)
            if family is not None:
                self.live_refresh[family] = refresh
        del self.recent[:-RECENT_TOKENS]


def seed_oauth(world: World) -> OAuthLedger:
    """Adds partner "gate" (admin grant), its API key (world.keys["gate-admin"]) and OAUTH_CLIENTS."""
    now = world.clock.now()
    secrets = {client_id: opaque.generate(opaque.CLIENT_SECRET_PREFIX) for client_id in OAUTH_CLIENTS}
    admin_key = opaque.generate(opaque.API_KEY_PREFIX)
    with world.seed() as repos:
        repos.partners.add(PartnerRecord("gate", "Gate", PartnerStatus.ACTIVE, ("admin",), (), now))
        record = ApiKeyRecord(new_id("key"), "gate", opaque.digest(admin_key), "gate-admin", (), (), (), now)
        repos.api_keys.add(record)
        for client_id, (partner, refresh, revoked) in OAUTH_CLIENTS.items():
            repos.oauth_clients.add(OAuthClientRecord(
                client_id, partner, client_id, opaque.digest(secrets[client_id]), (),
                ("C-1",) if partner == "acme" else (), refresh, now, revoked_at=now if revoked else None))
    world.keys["gate-admin"], world.key_ids["gate-admin"] = admin_key, record.id
    dead = {c for c, (partner, _, revoked) in OAUTH_CLIENTS.items() if revoked or partner == "shady"}
    valid_keys = {world.keys[name]: partner for name, partner in API_KEY_PARTNERS.items() if partner}
    return OAuthLedger(
        clients={c: s for c, s in secrets.items() if c not in dead},
        dead_clients={c: s for c, s in secrets.items() if c in dead},
        client_partners={c: partner for c, (partner, _, _) in OAUTH_CLIENTS.items()},
        introspectors={secrets["cli_gate"], admin_key},
        api_keys={**valid_keys, admin_key: "gate"},
        other_tokens=[world.keys[name] for name, partner in API_KEY_PARTNERS.items() if not partner]
        + [world.jwt("rsa"), world.jwt("hmac", "platform")])


def oauth_placeholders(ledger: OAuthLedger) -> dict[str, str]:
    """"@cs-<client>" (its secret), "@basic-<client>" (its Basic header value) and "@gate-admin"."""
    found = {"@gate-admin": next(k for k, partner in ledger.api_keys.items() if partner == "gate")}
    for client_id in OAUTH_CLIENTS:
        name = client_id.removeprefix("cli_")
        secret = ledger.secret_of(client_id) or ""
        found[f"@cs-{name}"] = secret
        found[f"@basic-{name}"] = basic_value(client_id, secret)
    return found


def basic_value(client_id: str, secret: str, *, scheme: str = "Basic", encode_all: bool = False) -> str:
    """HTTP Basic as RFC 6749 section 2.3.1 has it: id and secret form-encoded (`encode_all`: every
    character percent-encoded, which decodes to the same), joined by a colon, base64."""
    if encode_all:
        raw = "".join(f"%{b:02X}" for b in client_id.encode()) + ":" + "".join(f"%{b:02X}" for b in secret.encode())
    else:
        raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return f"{scheme} {base64.b64encode(raw.encode()).decode()}"


# --- requests and answers

@dataclass
class HttpRequest:
    """One request as the client sends it: the oracle reads it independently of the server."""

    method: str
    path: str  # with the query string, if any
    headers: list[tuple[str, bytes]]
    body: bytes
    chunked: bool = False

    def header_values(self, name: str) -> list[str]:
        return [value.decode("latin-1") for key, value in self.headers if key.lower() == name]

    @cached_property
    def parameters(self) -> list[tuple[str, str]]:
        """The body's parameters read as a form and as a JSON object, whatever the content type."""
        text = self.body.decode("utf-8", "replace")
        found = parse_qsl(text, keep_blank_values=True)
        try:
            document = json.loads(text, object_pairs_hook=lambda pairs: ("object", pairs))
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, tuple):
            found += [(str(k), v) for k, v in document[1] if isinstance(v, str)]
        return found

    @cached_property
    def views(self) -> list[str]:
        """The request's text decoded every way the server might read it: the body as text,
        percent-decoded, its form and JSON parameters; the path; every header value, and each of
        its words base64-decoded and percent-decoded (Basic)."""
        text = self.body.decode("utf-8", "replace")
        views = [text, unquote_plus(text), unquote_plus(self.path)]
        views += [value for _, value in self.parameters]
        for _, raw in self.headers:
            value = raw.decode("latin-1")
            views.append(value)
            for word in value.split():
                decoded = _lenient_b64(word)
                views += [decoded, unquote_plus(decoded)]
        return views

    def credentials(self) -> set[str]:
        """What the request sends as a credential: Authorization and X-API-Key values (whole and
        after the scheme), a Basic secret, and the secret-bearing parameters."""
        found: set[str] = set()
        for value in self.header_values("authorization") + self.header_values("x-api-key"):
            value = value.strip()
            found |= {value, value.partition(" ")[2].strip()}
            decoded = _lenient_b64(value.partition(" ")[2].strip())
            found |= {decoded.partition(":")[2], unquote_plus(decoded.partition(":")[2])}
        found |= {value for name, value in self.parameters if name in SECRET_PARAMETERS}
        return {value for value in found if _credential_like(value)}

    def quotable(self) -> list[str]:
        """What an answer may quote: parameter names (invalid_request) and the scope (invalid_scope)."""
        return [name for name, _ in self.parameters] + [v for name, v in self.parameters if name == "scope"]


def _credential_like(value: str) -> bool:
    """Whether a value sent as a credential could be one, for the echo scan: 20+ characters, no
    blanks, letters and digits (every secret, key and JWT has both). Text without digits may be
    what the server's own fixed descriptions say ("application/x-www-form-urlencoded" sent as an
    Authorization value is no credential echoed when the answer names the content types)."""
    return (len(value) >= MIN_ECHO_LENGTH and not any(c.isspace() for c in value)
            and any(c.isdigit() for c in value) and any(c.isalpha() for c in value))


def _lenient_b64(word: str) -> str:
    try:
        return base64.b64decode(word + "=" * (-len(word) % 4)).decode("utf-8", "replace")
    except ValueError:
        return ""


@dataclass(frozen=True)
class HttpAnswer:
    status: int | None  # None: no answer (the connection dropped, or the deadline passed)
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float
    error: str = ""

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key.lower() == name), "")


def http_client(world: World) -> httpx.Client:
    """A client of the world's HTTP listener: a new connection per request (so a dropped one is
    the server's doing, never a stale pooled one), the deadline as its timeout, no proxies."""
    return httpx.Client(base_url=f"http://127.0.0.1:{world.app.http_port}", timeout=DEADLINE_SECONDS,
                        limits=httpx.Limits(max_keepalive_connections=0), trust_env=False)


def send_http(http: httpx.Client, request: HttpRequest) -> HttpAnswer:
    headers = [(name, value) for name, value in request.headers if name.lower() not in FRAMING_HEADERS]
    content: Any = request.body
    if request.chunked:  # no Content-Length: httpx sends Transfer-Encoding: chunked
        body = request.body
        content = iter([body[:len(body) // 2], body[len(body) // 2:]])
    started = time.monotonic()
    try:
        response = http.request(request.method, request.path, headers=headers, content=content)
    except httpx.LocalProtocolError:
        raise  # the recipe built a request that is not HTTP: a bug of the recipe, not the server's
    except httpx.HTTPError as error:
        return HttpAnswer(None, [], b"", time.monotonic() - started, f"{type(error).__name__}: {error}")
    return HttpAnswer(response.status_code, list(response.headers.multi_items()), response.content,
                      time.monotonic() - started)


# --- the oracle

def assert_oauth_answer(ledger: OAuthLedger, request: HttpRequest, answer: HttpAnswer, *,
                        may_throttle: bool = False) -> dict[str, Any]:
    """Invariant 6. Returns the answer's JSON body; records the tokens a 200 issued in `ledger`."""
    if answer.status is None:
        fail(f"no answer: {answer.error}")
    if answer.seconds >= DEADLINE_SECONDS:
        fail(f"no answer within {DEADLINE_SECONDS}s ({answer.seconds:.2f}s)")
    if answer.status not in OAUTH_STATUSES | ({429} if may_throttle else set()):
        fail(f"HTTP {answer.status}: {answer.body[:300]!r}")
    if len(answer.body) > MAX_OAUTH_ANSWER_BYTES:
        fail(f"a {len(answer.body)}-byte answer")
    if not answer.header("content-type").startswith("application/json"):
        fail(f"HTTP {answer.status} as {answer.header('content-type')!r}: {answer.body[:200]!r}")
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        fail(f"HTTP {answer.status} whose body is no JSON object: {answer.body[:200]!r}")
    _assert_no_oauth_echo(ledger, request, answer, body)
    path = request.path.partition("?")[0]
    if path in DISCOVERY_PATHS and request.method == "GET" and answer.status == 200:
        return body  # public documents, cached on purpose
    if "no-store" not in answer.header("cache-control"):
        fail(f"HTTP {answer.status} without Cache-Control: no-store")
    if answer.status != 200:
        _assert_oauth_error(answer, body)
    elif path == OAUTH_PATHS[0]:
        _assert_issued(ledger, request, body)
    elif path == OAUTH_PATHS[1]:
        if body != {} or not _carries_any(request, ledger.clients.values()):
            fail(f"revocation answered 200 {body!r} without an active client's genuine secret")
    elif path == OAUTH_PATHS[2]:
        _assert_introspection(ledger, request, body)
    else:
        fail(f"200 from {path!r}")
    return body


def _assert_oauth_error(answer: HttpAnswer, body: dict[str, Any]) -> None:
    error, description = body.get("error"), body.get("error_description")
    # Unknown paths (404) and methods (405) are invalid_request too.
    expected = answer.status if answer.status in (404, 405) and error == "invalid_request" else OAUTH_ERRORS.get(error)
    if set(body) != {"error", "error_description"} or expected != answer.status:
        fail(f"undocumented error answer, HTTP {answer.status}: {body!r:.300}")
    if not isinstance(description, str) or not OAUTH_DESCRIPTION.fullmatch(description):
        fail(f"an error_description outside RFC 6749's characters: {description!r:.300}")
    if answer.status == 401 and not CHALLENGE.fullmatch(answer.header("www-authenticate")):
        fail(f"401 with WWW-Authenticate {answer.header('www-authenticate')!r}")
    if answer.status == 429 and not (answer.header("retry-after").isdigit() and int(answer.header("retry-after")) >= 1):
        fail(f"429 with Retry-After {answer.header('retry-after')!r}")


def _assert_issued(ledger: OAuthLedger, request: HttpRequest, body: dict[str, Any]) -> None:
    required, optional = {"access_token", "token_type", "expires_in", "scope"}, {"refresh_token"}
    if not required <= set(body) <= required | optional or body["token_type"] != "Bearer" \
            or not isinstance(body["expires_in"], int) or body["expires_in"] <= 0:
        fail(f"a token answer of another shape: {sorted(body)}")
    claims = _unverified_claims(body["access_token"])
    client_id = claims.get("client_id")
    secret = ledger.clients.get(client_id)
    if secret is None:
        fail(f"a token for {client_id!r}, which is no active client")
    if not _carries_any(request, [secret]):
        fail(f"a token for {client_id!r} without its genuine secret in the request")
    if claims.get("partner_id") != ledger.client_partners[client_id] or claims.get("sub") != client_id:
        fail(f"a token of {client_id!r} names partner {claims.get('partner_id')!r}, sub {claims.get('sub')!r}")
    family, refresh = claims.get(FAMILY_CLAIM), body.get("refresh_token", "")
    if family in ledger.live_refresh:  # a refresh: its family is known, the grant made a new one
        if not _carries_any(request, [ledger.live_refresh[family]]):
            fail("a refresh without its family's unspent refresh token (a spent one answered twice?)")
        if not refresh:
            fail("a refresh without a new refresh token (no rotation)")
    if refresh and (family is None or not opaque.well_formed(refresh, opaque.REFRESH_TOKEN_PREFIX)):
        fail("a malformed refresh token, or one outside a family")
    ledger.record(client_id, body["access_token"], refresh, family)


def _assert_introspection(ledger: OAuthLedger, request: HttpRequest, body: dict[str, Any]) -> None:
    if not _carries_any(request, ledger.introspectors):
        fail(f"introspection answered {body!r:.200} to a caller without the introspect grant")
    if body.get("active") is False:
        if body != {"active": False}:
            fail(f"an inactive token with more: {body!r:.300}")
        return
    if body.get("active") is not True:
        fail(f"an introspection answer without active: {body!r:.300}")
    kind = body.get("token_type")
    if kind == "Bearer":
        owners = {ledger.access_tokens[t] for t in _carried(request, ledger.access_tokens)}
        if body.get("client_id") not in owners:
            fail(f"active access token of {body.get('client_id')!r}: no such token in the request")
    elif kind == "refresh_token":
        live = set(ledger.live_refresh.values())
        owners = {ledger.refresh_tokens[t] for t in _carried(request, ledger.refresh_tokens) if t in live}
        if body.get("client_id") not in owners:
            fail(f"active refresh token of {body.get('client_id')!r}: no unspent one in the request")
    elif kind == "api_key":
        if body.get("sub") not in {ledger.api_keys[k] for k in _carried(request, ledger.api_keys)}:
            fail(f"active API key of {body.get('sub')!r}: no such key in the request")
    else:
        fail(f"active token of type {kind!r}")


# What a secret is made of (opaque secrets, JWT segments): a secret is carried only as a whole run
# of these, so that "<secret>x" or "x<secret>" does not count as presenting it.
_SECRET_RUN = re.compile(r"[A-Za-z0-9_.-]+")
# A JWT's signing input and what follows its last dot, up to a separator.
_JWT_PARTS = re.compile(r"([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\.([^\s&\"',;:]*)")


def _carried(request: HttpRequest, secrets: Iterable[str]) -> list[str]:
    """Which of `secrets` the request carries, whole, in any of its views. A JWT also counts when
    its signature is spelled otherwise (padding, unused trailing bits, characters a lenient base64
    decoder skips): the signed content and the signature bytes are the same."""
    pool = set(secrets)
    runs = {run for view in request.views for run in _SECRET_RUN.findall(view)}
    found = pool & runs
    jwts = {secret.rpartition(".")[0]: secret for secret in pool - found if secret.count(".") == 2}
    for view in request.views if jwts else ():
        for match in _JWT_PARTS.finditer(view):
            secret = jwts.get(match[1])
            if secret is not None and _b64_bytes(match[2]) == _b64_bytes(secret.rpartition(".")[2]):
                found.add(secret)
    return list(found)


def _carries_any(request: HttpRequest, secrets: Iterable[str]) -> bool:
    return bool(_carried(request, secrets))


def _assert_no_oauth_echo(ledger: OAuthLedger, request: HttpRequest, answer: HttpAnswer, body: dict) -> None:
    # The tokens a 200 issues are new; they are left out, as parts of them (the JWT header segment)
    # may equal parts of a token the request sent.
    shown = {k: v for k, v in body.items() if k not in ("access_token", "refresh_token")}
    text = "\n".join([json.dumps(shown, ensure_ascii=False), *map(str, shown.values()),
                      *(f"{k}: {v}" for k, v in answer.headers)])
    if shown == body:
        text += "\n" + answer.body.decode("utf-8", "replace")
    quotable = request.quotable()
    for secret in ledger.fixed_secrets() | set(ledger.recent) | request.credentials():
        if len(secret) >= MIN_ECHO_LENGTH and secret in text and not any(secret in q for q in quotable):
            fail(f"the answer (HTTP {answer.status}) echoes a credential")


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = json.loads(_b64_bytes(token.split(".")[1]) or b"")
    except (IndexError, ValueError):
        claims = None
    if not isinstance(claims, dict):
        fail("an access token that is no JWT")
    return claims


# --- the recipe: a chooser (fuzzer bytes or hypothesis draws) -> a request

class FuzzedChooser:
    """The recipe's choices from libFuzzer bytes (atheris.FuzzedDataProvider)."""

    def __init__(self, fdp) -> None:
        self.fdp = fdp

    def pick(self, values: list, label: str = "") -> Any:
        return values[self.fdp.ConsumeIntInRange(0, len(values) - 1)]

    def number(self, low: int, high: int, label: str = "") -> int:
        return self.fdp.ConsumeIntInRange(low, high)

    def text(self, label: str = "", max_size: int = 48) -> str:
        # Not the megabyte strings of text(long=True): the recipe sizes bodies and headers around
        # the HTTP limits itself (BODY_SIZES, a huge Basic value), and bigger ones only cost memory.
        return text(self.fdp, max_size, long=False)

    def raw(self, label: str = "", max_size: int = 64) -> bytes:
        return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, max_size))


GRANT_TYPES = ["client_credentials", "client_credentials", "refresh_token", "refresh_token", "password",
               "authorization_code", "", "Client_Credentials", "client_credentials ", "implicit",
               "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:token-exchange"]
SCOPES = ["user:read", "read:user", "admin", "user:read user:write", "introspect:read", "court-booking:write",
          "order:read", "", " ", "user:read  user:write", "user:read\tuser:write", "unknown:read",
          "user:read user:read",
          "x" * 70, " ".join(["user:read"] * 65), "relations:admin", "user:delete", "\"user:read\""]
EXTRA_NAMES = ["client_id", "client_secret", "grant_type", "scope", "refresh_token", "token", "token_type_hint",
               "username", "password", "code", "redirect_uri", "assertion", "resource", "audience", "__proto__",
               "", "a" * 50, "client_id[]", "scope[0]", "x"]
TOKEN_HINTS = ["access_token", "refresh_token", "api_key", "", "jwt", "x" * 40]
CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/json",
                 "application/x-www-form-urlencoded; charset=UTF-8",
                 "application/x-www-form-urlencoded;charset=latin-1",
                 "APPLICATION/JSON; charset=utf-16", "application/json;", "Application/X-WWW-Form-Urlencoded",
                 "text/plain", "multipart/form-data; boundary=x", "application/jwt", "application/json-patch+json",
                 "", ";", "application/x-www-form-urlencoded, application/json", " application/json ",
                 "application/json; charset=\"utf-8\"; boundary=\x7f", "*/*"]
ODD_PATHS = ["/oauth/token/", "/oauth//token", "/OAUTH/TOKEN", "/oauth/Token", "/oauth/authorize", "/oauth", "/",
             "/oauth/%74oken", "/oauth/token%00", "/oauth/token%2F", "//oauth/revoke", "/oauth/token;x=1",
             "/oauth/./introspect", "/metrics", "/health", "/oauth/introspect/", *DISCOVERY_PATHS]
METHODS = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "post"]
QUERIES = ["grant_type=client_credentials", "client_secret=@secret", "token=@token", "a=1", "%00", "=", "&&",
           "scope=" + "x" * 3000, "?"]
JUNK_HEADERS = [("Content-Encoding", b"gzip"), ("Expect", b"100-continue"), ("X-Forwarded-For", b"203.0.113.9"),
                ("Accept", b"text/html"), ("Accept-Charset", b"latin-1"), ("Cookie", b"session=x"),
                ("X-HTTP-Method-Override", b"GET"), ("Forwarded", b"for=203.0.113.9;host=evil.test"),
                ("X-Forwarded-Host", b"evil.test"), ("Origin", b"https://evil.test")]
CLIENT_AUTH = ["basic", "basic", "basic-spelled-otherwise", "post", "post", "basic-wrong-secret",
               "post-wrong-secret", "basic-garbage", "bearer", "other-scheme", "none", "basic-and-post",
               "two-authorization-headers", "api-key-header", "id-without-secret"]
BODY_KINDS = ["form", "form", "form", "json", "json", "json-hostile", "raw", "oversized", "empty"]
BODY_SIZES = [16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 64 * 1024, 1_000_000]


def one_of(choose, pool: list[str], label: str, fallback: str = "") -> str:
    """A value of a pool that grows with the run (tokens issued so far). The choice is drawn from a
    fixed range whatever the pool holds, so that what is drawn never depends on the server's state
    (hypothesis requires it of a strategy; libFuzzer does not mind)."""
    index = choose.number(0, 15, label)
    return pool[index % len(pool)] if pool else fallback


def header_bytes(value: str) -> bytes:
    """`value` as a header value an HTTP client may send: UTF-8, without the control characters
    HTTP forbids (tab aside), no leading or trailing blanks."""
    raw = bytes(b for b in value.encode("utf-8", "surrogatepass") if b == 9 or 32 <= b != 127)
    return raw.strip(b" \t")


def mutate_secret(choose, secret: str) -> str:
    """A secret changed a little, never into itself (an empty one becomes "x")."""
    secret = secret or "x"
    position = choose.number(0, 1023, "position") % len(secret)
    how = choose.pick(["replace", "insert", "drop", "cut", "double", "upper", "append", "whitespace"], "mutation")
    if how == "replace":
        new = choose.pick(list("A0_-.=+/~%é\x00"), "replacement")
        new = new if new != secret[position] else ("A" if secret[position] != "A" else "B")
        return secret[:position] + new + secret[position + 1:]
    if how == "insert":
        return secret[:position] + choose.pick(list("A0_ %\t\x00é+"), "inserted") + secret[position:]
    if how == "drop":
        return secret[:position] + secret[position + 1:]
    if how == "cut":
        return secret[:position]
    if how == "double":
        return secret * 2
    if how == "upper":
        return secret.upper() if secret.upper() != secret else secret.lower()
    if how == "whitespace":
        return choose.pick([" ", "\t", "\u00a0", "\u200b"], "blank") + secret
    return secret + choose.text("appended", 8) + "x"


def oauth_request(choose, ledger: OAuthLedger, paths: tuple[str, ...] = OAUTH_PATHS) -> HttpRequest:
    """A request to one of `paths`: one time in three a well-formed one with at most one twist,
    which reaches the grants, refreshes, revocations and introspections behind the parsing; else
    one from hostile and genuine parts (now and then to another path, or with another method):
    client authentication, parameters, body encoding, content type, framing."""
    if choose.number(0, 2, "well-formed?") == 0:
        return _well_formed(choose, ledger, paths)
    path = choose.pick(list(paths), "path") if choose.number(0, 15, "odd path?") else choose.pick(ODD_PATHS, "odd path")
    method = "POST" if choose.number(0, 15, "odd method?") else choose.pick(METHODS, "method")
    headers, params = _client_auth(choose, ledger)
    params += _grant_parameters(choose, ledger, path)
    for _ in range(choose.number(0, 2, "extra parameters")):
        listed = choose.number(0, 2, "listed name?")
        name = choose.pick(EXTRA_NAMES, "extra name") if listed else choose.text("name", 24)
        params.append((name, choose.text("extra value")))
    if params and choose.number(0, 7, "duplicate?") == 0:
        params.append(choose.pick(params, "duplicated"))
    if params and choose.number(0, 1, "shuffle?"):
        params = params[1:] + params[:1]
    body, content_type = _body(choose, params)
    if choose.number(0, 3, "other content type?") == 0:
        content_type = choose.pick(CONTENT_TYPES, "content type")
    if content_type is not None:
        headers.append(("Content-Type", header_bytes(content_type)))
    if choose.number(0, 7, "junk header?") == 0:
        headers.append(choose.pick(JUNK_HEADERS, "junk header"))
    if choose.number(0, 7, "query?") == 0:
        query = choose.pick(QUERIES, "query").replace("@secret", ledger.clients["cli_fuzz"])
        path += "?" + query.replace("@token", ledger.last_access.get("cli_fuzz", "x"))
    chunked = choose.number(0, 3, "chunked?") == 0
    return HttpRequest(method, path, headers, body, chunked)


TWISTS = ["none", "none", "none", "chunked", "charset", "extra-parameter", "duplicate", "query", "junk-header",
          "scope", "every-character-encoded", "basic-spelled-otherwise"]


def _well_formed(choose, ledger: OAuthLedger, paths: tuple[str, ...]) -> HttpRequest:
    """A request a real client could send (genuine credentials, the right parameters), with at
    most one twist that keeps it valid or makes it subtly wrong."""
    path = choose.pick(list(paths), "path")
    twist = choose.pick(TWISTS, "twist")
    if path == OAUTH_PATHS[2] and choose.number(0, 3, "bearer caller?") == 0:
        client_id = ""
        headers = [("Authorization", f"Bearer {one_of(choose, sorted(ledger.introspectors), 'introspector')}".encode())]
    else:
        client_id = choose.pick(["cli_gate", "cli_gate", "cli_fuzz"] if path == OAUTH_PATHS[2]
                                else ["cli_fuzz", "cli_fuzz", "cli_plain", "cli_gate"], "client")
        headers = []
    params: list[tuple[str, str]] = []
    if client_id and choose.number(0, 1, "client_secret_post?") == 0:
        params += [("client_id", client_id), ("client_secret", ledger.clients[client_id])]
    elif client_id:
        scheme = "basic" if twist == "basic-spelled-otherwise" else "Basic"
        headers.append(("Authorization", basic_value(client_id, ledger.clients[client_id], scheme=scheme,
                                                     encode_all=twist == "basic-spelled-otherwise").encode()))
    if path == OAUTH_PATHS[0]:
        live = [t for t in ledger.live_refresh.values() if ledger.refresh_tokens.get(t) == client_id]
        refresh = one_of(choose, live[-4:], "refresh token") if choose.number(0, 1, "refresh?") == 0 else ""
        if refresh:
            params += [("grant_type", "refresh_token"), ("refresh_token", refresh)]
        else:
            params.append(("grant_type", "client_credentials"))
    else:
        params.append(("token", _token(choose, ledger)))
    if twist == "scope":
        params.append(("scope", choose.pick(SCOPES, "scope")))
    elif twist == "extra-parameter":
        params.append((choose.pick(EXTRA_NAMES, "extra name"), choose.text("extra value")))
    elif twist == "duplicate":
        params.append(choose.pick(params, "duplicated"))
    as_json = choose.number(0, 2, "JSON?") == 0
    body = _json_object(params) if as_json else _form(params, "every-character" if twist == "every-character-encoded"
                                                      else "quote_plus")
    content_type = "application/json" if as_json else "application/x-www-form-urlencoded"
    if twist == "charset":
        content_type += choose.pick(["; charset=utf-8", "; charset=UTF-8", ";charset=latin-1", "; q=1"], "parameter")
    headers.append(("Content-Type", content_type.encode()))
    if twist == "junk-header":
        headers.append(choose.pick(JUNK_HEADERS, "junk header"))
    if twist == "query":
        path += "?" + choose.pick(["a=1", "grant_type=client_credentials", "", "client_id=cli_fuzz"], "query")
    return HttpRequest("POST", path, headers, body, chunked=twist == "chunked")


def _client_auth(choose, ledger: OAuthLedger) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(headers, body parameters) by which the caller authenticates, genuinely or not."""
    client_id = choose.pick([*OAUTH_CLIENTS, "cli_fuzz", "cli_fuzz", "cli_gate", "cli_nobody"], "client")
    secret = ledger.secret_of(client_id) or opaque.generate(opaque.CLIENT_SECRET_PREFIX)
    how = choose.pick(CLIENT_AUTH, "client authentication")
    def basic(i, s):
        return [("Authorization", basic_value(i, s).encode())]
    if how == "basic":
        return basic(client_id, secret), []
    if how == "basic-spelled-otherwise":
        scheme = choose.pick(["basic", "BASIC", "Basic ", "bAsIc"], "scheme")
        return [("Authorization", header_bytes(basic_value(client_id, secret, scheme=scheme, encode_all=True)))], []
    if how == "post":
        return [], [("client_id", client_id), ("client_secret", secret)]
    if how == "basic-wrong-secret":
        return [("Authorization", header_bytes(basic_value(client_id, mutate_secret(choose, secret))))], []
    if how == "post-wrong-secret":
        return [], [("client_id", client_id), ("client_secret", mutate_secret(choose, secret))]
    if how == "basic-garbage":
        return [("Authorization", _garbage_basic(choose, client_id, secret))], []
    if how == "bearer":
        return [("Authorization", header_bytes("Bearer " + _token(choose, ledger)))], []
    if how == "other-scheme":
        scheme = choose.pick(["Digest", "Token", "Negotiate", "NTLM", "Bearer:", "Basic:", "HOBA", "DPoP", ""],
                             "scheme")
        value = choose.pick([secret, _token(choose, ledger)], "value")
        return [("Authorization", header_bytes(f"{scheme} {value}"))], []
    if how == "basic-and-post":
        other = choose.pick([client_id, "cli_plain"], "body client")
        return basic(client_id, secret), [("client_id", other), ("client_secret", ledger.secret_of(other) or secret)]
    if how == "two-authorization-headers":
        return [*basic(client_id, secret), ("Authorization", header_bytes("Bearer " + _token(choose, ledger)))], []
    if how == "api-key-header":
        return [("X-API-Key", header_bytes(_token(choose, ledger)))], []
    if how == "id-without-secret":
        return [], [("client_id", client_id)]
    return [], []


def _garbage_basic(choose, client_id: str, secret: str) -> bytes:
    kind = choose.pick(["text", "not-base64", "no-colon", "empty-id", "unpadded", "not-utf8", "latin-1",
                        "bad-percent", "bare", "url-alphabet", "nul-id", "huge"], "garbage Basic")
    def b64(raw):
        return base64.b64encode(raw).decode()
    value = {
        "text": lambda: "Basic " + choose.text("Basic text"),
        "not-base64": lambda: f"Basic {client_id}:{secret}",
        "no-colon": lambda: "Basic " + b64((client_id + secret).encode()),
        "empty-id": lambda: "Basic " + b64(f":{secret}".encode()),
        "unpadded": lambda: "Basic " + b64(f"{client_id}:{secret}x".encode()).rstrip("="),
        "not-utf8": lambda: "Basic " + b64(choose.raw("Basic bytes", 64) + b"\xff:\xfe"),
        "latin-1": lambda: "Basic " + b64(f"{client_id}:".encode()) + "\u00e9\u00ff",
        "bad-percent": lambda: "Basic " + b64(f"{client_id}%zz:%{secret}%".encode()),
        "bare": lambda: "Basic",
        "url-alphabet": lambda: "Basic " + base64.urlsafe_b64encode(f"{client_id}:{secret}\xff\xfe".encode()).decode(),
        "nul-id": lambda: "Basic " + b64(f"{client_id}%00:{secret}".encode()),
        "huge": lambda: "Basic " + "QUFB" * choose.pick([4097, 20_000, 250_000], "Basic size"),
    }[kind]()
    return value.encode("latin-1") if kind == "latin-1" else header_bytes(value)


def _token(choose, ledger: OAuthLedger) -> str:
    """A token to present: issued by this run (current or spent), a seeded key, another issuer's
    JWT, a client secret, one of those mutated, or hostile text."""
    kind = choose.pick(["access", "refresh", "spent-refresh", "api-key", "other", "client-secret", "mutated", "text"],
                       "token kind")
    issued = {"access": list(ledger.last_access.values()), "refresh": list(ledger.live_refresh.values())[-8:],
              "spent-refresh": ledger.spent_refresh_tokens()[-8:], "api-key": list(ledger.api_keys),
              "other": ledger.other_tokens, "client-secret": list(ledger.clients.values())}
    if kind in issued:
        return one_of(choose, issued[kind], kind, fallback="tg_rt_")
    if kind == "mutated":
        pool = [*ledger.last_access.values(), *list(ledger.live_refresh.values())[-8:], *ledger.api_keys]
        return mutate_secret(choose, one_of(choose, pool, "to mutate"))
    return choose.text("token text")


def _grant_parameters(choose, ledger: OAuthLedger, path: str) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if path == OAUTH_PATHS[0]:
        if choose.number(0, 7, "grant type absent?"):
            grant = choose.pick(GRANT_TYPES, "grant_type") if choose.number(0, 5, "listed grant?") \
                else choose.text("grant_type")
            params.append(("grant_type", grant))
        if choose.number(0, 2, "refresh token?") == 0 or (params and params[0][1] == "refresh_token"):
            params.append(("refresh_token", _token(choose, ledger) if choose.number(0, 3, "any token?") == 0
                           else one_of(choose, list(ledger.live_refresh.values())[-8:], "live refresh", "tg_rt_")))
    elif choose.number(0, 7, "token absent?"):
        params.append(("token", _token(choose, ledger)))
        if choose.number(0, 2, "hint?") == 0:
            params.append(("token_type_hint", choose.pick(TOKEN_HINTS, "hint")))
    if choose.number(0, 2, "scope?") == 0:
        params.append(("scope", choose.pick(SCOPES, "scope") if choose.number(0, 3, "listed scope?")
                       else choose.text("scope")))
    return params


def _body(choose, params: list[tuple[str, str]]) -> tuple[bytes, str | None]:
    """The body and the content type that fits it (which the recipe may then replace)."""
    kind = choose.pick(BODY_KINDS, "body kind")
    if kind == "form":
        style = choose.pick(["quote_plus", "every-character", "raw"], "form encoding")
        return _form(params, style), "application/x-www-form-urlencoded"
    if kind == "json":
        return _json_object(params, ascii_only=bool(choose.number(0, 1, "ascii?"))), "application/json"
    if kind == "json-hostile":
        return _hostile_json(choose, params), "application/json"
    if kind == "raw":
        return choose.raw("raw body", 512), choose.pick([None, "application/x-www-form-urlencoded", "application/json"],
                                                        "raw content type")
    if kind == "oversized":
        size = choose.pick(BODY_SIZES, "body size")
        body = _form(params, "quote_plus") + b"&pad="
        return (body + b"a" * max(0, size - len(body)))[:size], "application/x-www-form-urlencoded"
    return b"", choose.pick([None, "application/x-www-form-urlencoded", "application/json"], "empty content type")


def _form(params: list[tuple[str, str]], style: str) -> bytes:
    def encode(value: str) -> str:
        if style == "raw":
            return value
        if style == "every-character":
            return "".join(f"%{b:02X}" for b in value.encode("utf-8", "surrogatepass"))
        return quote(value, safe="").replace("%20", "+")

    return "&".join(f"{encode(name)}={encode(value)}" for name, value in params).encode("utf-8", "surrogatepass")


def _json_object(params: list[tuple[str, str]], *, ascii_only: bool = True) -> bytes:
    """A JSON object with these members in order, duplicates kept."""
    members = ",".join(f"{json.dumps(n, ensure_ascii=ascii_only)}:{json.dumps(v, ensure_ascii=ascii_only)}"
                       for n, v in params)
    return ("{" + members + "}").encode("utf-8", "surrogatepass")


def _hostile_json(choose, params: list[tuple[str, str]]) -> bytes:
    kind = choose.pick(["array-of-pairs", "array", "number-value", "null-value", "object-value", "array-value",
                        "deep", "nan", "huge-number", "trailing", "bom", "utf-16", "lone-surrogate", "string",
                        "many-members", "empty-object", "truncated", "single-quotes"], "hostile JSON")
    if kind == "array-of-pairs":
        return json.dumps([list(p) for p in params]).encode()
    if kind == "array":
        return json.dumps([v for _, v in params] + [1, None]).encode()
    if kind in ("number-value", "null-value", "object-value", "array-value", "nan", "huge-number", "deep"):
        # One member's value (or an extra member's) is no string.
        value = {"number-value": "12", "null-value": "null", "object-value": '{"a":"b"}', "array-value": '["x","y"]',
                 "nan": "NaN", "huge-number": "9" * 5000, "deep": "[" * 5000 + "]" * 5000}[kind]
        target = choose.pick([n for n, _ in params] + ["extra"], "member")
        members = [f"{json.dumps(n)}:{value if n == target else json.dumps(v)}" for n, v in params]
        members += [f'"extra":{value}'] if target == "extra" else []
        return ("{" + ",".join(members) + "}").encode("utf-8", "surrogatepass")
    if kind == "trailing":
        return _json_object(params) + choose.pick([b"x", b"{}", b"\x00", b" ", b"\n\n"], "trailing")
    if kind == "bom":
        return b"\xef\xbb\xbf" + _json_object(params)
    if kind == "utf-16":
        return _json_object(params).decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    if kind == "lone-surrogate":
        return _json_object([*params, ("grant_type", "\ud800")])  # \ud800 escaped: valid JSON, no valid text
    if kind == "string":
        return json.dumps(_form(params, "quote_plus").decode()).encode()
    if kind == "many-members":
        return _json_object(params + [(f"p{i}", "x") for i in range(65)])
    if kind == "empty-object":
        return b"{}"
    if kind == "truncated":
        whole = _json_object(params)
        return whole[:choose.number(0, 4095, "cut at") % max(1, len(whole))]
    return _json_object(params).replace(b'"', b"'")
