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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import unquote

import grpc
import jwt
from google.protobuf.message import DecodeError, Message

from tests.support.hostile import (  # noqa: F401  (re-exported for the targets)
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


def start() -> Fixture:
    """A seeded server over SQLite in TOLLGATE_FUZZ_DATA_DIR (or a new temp dir)."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    data_dir = Path(os.environ.get("TOLLGATE_FUZZ_DATA_DIR") or tempfile.mkdtemp(prefix="tollgate-fuzz-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    world = start_world(f"sqlite:///{data_dir / 'tollgate.db'}", data_dir,
                        expiry_sweep_seconds=3600.0, health_check_seconds=3600.0)
    jwts = {"jwt-rsa": (world.jwt("rsa"), "acme"), "jwt-ec": (world.jwt("ec", "globex"), "globex"),
            "jwt-ed": (world.jwt("ed", scope="read:user"), "acme"), "jwt-hmac": (world.jwt("hmac", "platform"), "platform")}
    placeholders = {f"@{name}": world.keys[name] for name in API_KEY_PARTNERS}
    placeholders |= {f"@{name}": token for name, (token, _) in jwts.items()}
    genuine = {world.keys[name]: partner for name, partner in API_KEY_PARTNERS.items() if partner}
    genuine |= {token: partner for token, partner in jwts.values()}
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
    """The token a request presents (invariant 3): Authorization wins unless blank."""
    authorization = authorization.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return api_key.strip() or None


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
    fuzz = lambda: text(fdp, 24, long=False)  # noqa: E731
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
        "iat": recipe.free([now, ABSENT, "x", now + 10 ** 9, float("nan"), lambda: nested(fdp)]),
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

