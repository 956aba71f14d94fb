"""Hostile input for the fuzz and attack tests: hypothesis strategies, hand-built JWS, and oracles.

The oracles say what a hostile call may end in, as the README documents it:

- Check / BatchCheck: a CheckResponse that denies with a documented reason (and its HTTP status),
  or allows only where an allow is legitimate; or INVALID_ARGUMENT (a malformed request), or
  RESOURCE_EXHAUSTED when the request itself is over the 1 MiB receive limit.
- Envoy ext_authz: always a CheckResponse; ok_response only where an allow is legitimate,
  denied_response (400/401/403/429) otherwise; never error_response (that 503 means the server
  failed, which hostile input must not make it do while the store is up).
- ManageRelation: a response only for a valid caller; otherwise INVALID_ARGUMENT,
  UNAUTHENTICATED, NOT_FOUND, PERMISSION_DENIED or FAILED_PRECONDITION with an ErrorInfo.

Never INTERNAL, UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED (a hang) or a dropped connection; no
answer over 64 KiB (no amplification) and no error message over 1,024 characters (errors quote
at most an excerpt of the request, so they always fit a default client's 16 KiB trailers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import strategies as st

from .keys import SigningKey

# Every call gets this deadline; a call that has not answered by then is a hang.
DEADLINE_SECONDS = 5.0
# The server's grpc.max_receive_message_length (service/server.py).
MAX_MESSAGE_BYTES = 1024 * 1024
# A decision is a few hundred bytes; one far larger echoes the request back.
MAX_ANSWER_BYTES = 64 * 1024
# service/domain/credentials.py: longer credentials are refused before any parsing.
MAX_CREDENTIAL_LENGTH = 16 * 1024

# README "Check reasons": reason -> HTTP status.
DOCUMENTED_REASONS = {
    "unknown_operation": 403,
    "missing_token": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "token_revoked": 401,
    "insufficient_scope": 403,
    "user_access_denied": 403,
    "organization_access_denied": 403,
    "customer_access_denied": 403,
    "rate_limit_exceeded": 429,
}
TOKEN_REASONS = frozenset({"missing_token", "invalid_token", "token_expired", "token_revoked"})

CHECK_ERROR_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
MANAGE_ERROR_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
})

# An error message quotes at most an excerpt of the request (service/domain/text.py).
MAX_ERROR_MESSAGE = 1024


# --- calling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one call ended in: a response, or an error (code, message, ErrorInfo reason)."""

    response: Any
    code: grpc.StatusCode | None
    message: str
    reason: str
    domain: str
    seconds: float
    trailers: str = ""

    @property
    def failed(self) -> bool:
        return self.code is not None


def call(method: Callable, request, **kwargs) -> Outcome:
    """Calls with the deadline and returns an Outcome instead of raising."""
    kwargs.setdefault("timeout", DEADLINE_SECONDS)
    started = time.monotonic()
    try:
        response = method(request, **kwargs)
    except grpc.RpcError as error:
        seconds = time.monotonic() - started
        reason = domain = ""
        try:
            status = rpc_status.from_call(error)
        except ValueError:  # details that disagree with the code (e.g. a trailer the client refused)
            status = None
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason, domain = info.reason, info.domain
        trailers = " ".join(f"{k}={v!r}" for k, v in (error.trailing_metadata() or ()))
        return Outcome(None, error.code(), error.details() or "", reason, domain, seconds, trailers)
    return Outcome(response, None, "", "", "", time.monotonic() - started)


def assert_answered_in_time(outcome: Outcome) -> None:
    assert outcome.code is not grpc.StatusCode.DEADLINE_EXCEEDED, "the call hung past its deadline"
    assert outcome.seconds < DEADLINE_SECONDS, f"the call took {outcome.seconds:.1f}s"


def assert_error_is_one_of(outcome: Outcome, codes: frozenset[grpc.StatusCode], *, bounded: bool = True) -> None:
    """One of `codes`, with an ErrorInfo; with `bounded`, a message that quotes no more than an
    excerpt of the request, however long the request was."""
    assert outcome.code in codes, f"{outcome.code}: {outcome.message[:300]}"
    assert outcome.domain == "tollgate.dev" and outcome.reason, "every error of ours carries an ErrorInfo"
    if bounded:
        assert len(outcome.message) <= MAX_ERROR_MESSAGE, f"a {len(outcome.message)}-character error message"


# --- oracles ---------------------------------------------------------------------------------

# RFC 7230 section 3.2.6 tchar: what an auth-scheme (RFC 7235) is made of.
AUTH_SCHEME_CHARACTERS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def presented_token(authorization: str, api_key: str) -> str | None:
    """The credential a request presents, as RFC 6750 has it: the Bearer Authorization header's
    token wins; a header in another auth-scheme carries no bearer credentials, so X-API-Key counts
    as when the header is blank; a header that is no `scheme [...]` at all presents nothing good."""
    authorization = authorization.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip() or None
        if not scheme or not AUTH_SCHEME_CHARACTERS.issuperset(scheme):
            return None
    return api_key.strip() or None



def assert_check_response(response, *, may_allow: bool, partner_id: str | None = None) -> None:
    """A tollgate.v1 CheckResponse: allow only where legitimate, else a documented deny, which
    names a principal only after a genuine credential (`partner_id`'s) was proven."""
    assert response.decision_id, "every decision has an id"
    if response.allowed:
        assert may_allow, f"allowed where only a deny is right: {response}"
        assert response.http_status == 200 and response.reason == "" and response.body == ""
        if partner_id is not None and response.HasField("principal"):
            assert response.principal.partner_id == partner_id, "allowed as another partner"
        return
    assert response.reason in DOCUMENTED_REASONS, f"undocumented reason {response.reason!r}"
    assert response.http_status == DOCUMENTED_REASONS[response.reason]
    assert response.deny_reason != 0 and not response.grants
    if response.HasField("principal"):
        assert partner_id is not None and response.principal.partner_id == partner_id, "a deny names another principal"
        assert response.reason not in TOKEN_REASONS, "a credential that was refused names a principal"
    body = json.loads(response.body)
    assert isinstance(body, dict)


def assert_check_outcome(outcome: Outcome, *, may_allow: bool, request_bytes: int,
                         partner_id: str | None = None) -> None:
    assert_answered_in_time(outcome)
    if outcome.failed:
        if request_bytes > MAX_MESSAGE_BYTES:
            assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
            return
        assert_error_is_one_of(outcome, CHECK_ERROR_CODES)
        return
    assert request_bytes <= MAX_MESSAGE_BYTES, "a message over the receive limit was accepted"
    assert_check_response(outcome.response, may_allow=may_allow, partner_id=partner_id)
    assert outcome.response.ByteSize() <= MAX_ANSWER_BYTES, "the answer amplifies the request"


def assert_ext_authz_outcome(outcome: Outcome, *, may_allow: bool, request_bytes: int) -> str:
    """Returns "allow", "invalid_request" or the deny reason."""
    assert_answered_in_time(outcome)
    if outcome.failed:
        assert request_bytes > MAX_MESSAGE_BYTES and outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
        return "resource_exhausted"
    response = outcome.response
    assert response.ByteSize() <= MAX_ANSWER_BYTES, "the answer amplifies the request"
    kind = response.WhichOneof("http_response")
    reason = response.dynamic_metadata.fields["reason"].string_value
    assert response.dynamic_metadata.fields["decision_id"].string_value
    if kind == "ok_response":
        assert may_allow, f"allowed where only a deny is right: {response}"
        assert response.status.code == 0
        return "allow"
    assert kind == "denied_response", f"ext_authz answered {kind}: {response.status.message!r}"
    status = response.denied_response.status.code
    body = json.loads(response.denied_response.body)
    if reason == "invalid_request":
        assert status == 400 and response.status.code == 3  # INVALID_ARGUMENT
        assert body["errors"][0]["reason"] == "invalid_request"
        return reason
    assert reason in DOCUMENTED_REASONS, f"undocumented reason {reason!r}"
    assert status == DOCUMENTED_REASONS[reason]
    assert response.status.code != 0
    return reason


def metadata_bytes(metadata) -> int:
    """The size gRPC charges against grpc.max_metadata_size: name + value + 32 per entry (RFC 7541)."""
    return sum(len(name) + len(value) + 32 for name, value in metadata)


# The server's grpc.max_metadata_size (service/server.py); past it gRPC refuses calls with
# RESOURCE_EXHAUSTED, with a probability that reaches 1 at 1.25 times the limit. The margin
# covers the headers the client adds itself (path, authority, user agent, timeout...).
MAX_METADATA_BYTES = 64 * 1024
METADATA_MARGIN = 1024


def assert_manage_outcome(outcome: Outcome, *, authenticated: bool, has_action: bool = True,
                          metadata_size: int = 0, request_bytes: int = 0) -> None:
    """A caller without a valid credential gets UNAUTHENTICATED (with a token reason) for any
    action: nothing about the request is looked at before the caller is known, except that an
    action is set at all (INVALID_ARGUMENT). A message over 1 MiB is refused by gRPC itself with
    RESOURCE_EXHAUSTED, and metadata near or over its limit may be."""
    assert_answered_in_time(outcome)
    if request_bytes > MAX_MESSAGE_BYTES:
        assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
        return
    if outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED and metadata_size > MAX_METADATA_BYTES - METADATA_MARGIN:
        return
    if not outcome.failed:
        assert authenticated and has_action, "ManageRelation succeeded where it must not"
        return
    assert_error_is_one_of(outcome, MANAGE_ERROR_CODES)
    if not has_action:
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome
    elif not authenticated:
        assert outcome.code is grpc.StatusCode.UNAUTHENTICATED and outcome.reason in TOKEN_REASONS, outcome


# --- strategies ------------------------------------------------------------------------------

# Protobuf strings are UTF-8: every code point but the surrogates (which UTF-8 cannot encode).
ANY_CHARACTER = st.characters(exclude_categories=("Cs",))
# What HTTP/2 header values (gRPC metadata) may carry.
HEADER_CHARACTER = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

NASTY = [
    "", " ", "\x00", "\x00" * 8, "\t", "\r\n", "\n", "\x7f", "\u202e", "\ufeff", "\u200b", "\uffff",
    "\U0010ffff", "😀", "é", "e\u0301", "İ", "ß", "ﬀ", "²", "١٢٣", "𝟙𝟚𝟛", "Ⅻ",
    "null", "None", "undefined", "true", "NaN", "-1", "0", "9" * 40, "1e400", "{}", "[]", '{"a":', "\\",
    "'", '"', "' OR '1'='1", "'; DROP TABLE api_keys; --", "1; SELECT pg_sleep(10)--", "%00", "%2e%2e%2f",
    "../../../../etc/passwd", "..\\..\\windows\\win.ini", "/dev/zero", "file:///etc/shadow",
    "http://169.254.169.254/latest/meta-data/", "${jndi:ldap://x.test/a}", "{{7*7}}", "<script>", "%s%s%n",
    "Bearer", "Bearer ", "bearer  ", "Bearer\t", "BEARER x", "Basic dXNlcjpwYXNz", "Bearer a b", "Bearer Bearer x",
    "tg_live_", "tg_live_" + "0" * 36, "tg_live_" + "A" * 30 + "000000", "tg_ct_" + "0" * 36,
    "a.b.c", "..", "...", "e30.e30.", "e30.e30.e30", "eyJhbGciOiJub25lIn0.e30.",
    "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJpc3MiOiJodHRwczovL3JzYS5pc3N1ZXIudGVzdCJ9.",
    "health", "getUser", "user:read", "read:user", "admin", "relations:admin", ":", "user:", ":read",
    "u-active", "o-active", "C-1", "rel_", "ct_",
]

SIZES = [MAX_CREDENTIAL_LENGTH - 1, MAX_CREDENTIAL_LENGTH + 1, 64 * 1024 + 1, 200_000]


def oversized() -> st.SearchStrategy[str]:
    """One repeated character at a size around the limits (cheap to build, large on the wire)."""
    return st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "\x00", "é", "😀", " ", "."]), st.sampled_from(SIZES))


def hostile_text(max_size: int = 64, *, allow_oversized: bool = True) -> st.SearchStrategy[str]:
    """Mostly the NASTY strings (alone, or with random text before or after), else random text
    of any code point, else (allow_oversized) one character repeated past the size limits."""
    nasty, noise = st.sampled_from(NASTY), st.text(ANY_CHARACTER, max_size=8)
    options = [nasty, st.builds(lambda a, b: a + b, nasty, noise), st.builds(lambda a, b: a + b, noise, nasty),
               st.text(ANY_CHARACTER, max_size=max_size)]
    if allow_oversized:
        options.append(oversized())
    return st.one_of(*options)


def header_text(max_size: int = 64) -> st.SearchStrategy[str]:
    printable = [s for s in NASTY if s.isascii() and all(0x20 <= ord(c) <= 0x7E for c in s)]
    return st.one_of(st.sampled_from(printable), st.text(HEADER_CHARACTER, max_size=max_size),
                     st.builds(lambda n: "a" * n, st.sampled_from([MAX_CREDENTIAL_LENGTH + 1, 32 * 1024])))


# Characters str.isdigit() accepts that are not decimal digits (superscripts, circled, ...).
OTHER_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃①②③⓪⑴⒈❶➀"


def revision_text() -> st.SearchStrategy[str]:
    """at_least_as_fresh values: ASCII and other Unicode digits (which int() may refuse), and
    hostile text."""
    return st.one_of(st.text(st.sampled_from("0123456789"), min_size=1, max_size=25),
                     st.text(st.one_of(st.characters(categories=("Nd",)), st.sampled_from(OTHER_DIGITS)),
                             min_size=1, max_size=6),
                     hostile_text(32))


def durations() -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) of a Duration: the boundaries of the TTL checks, past what a timedelta
    holds (about 8.6e13 s), and any int64/int32."""
    seconds = st.one_of(st.sampled_from([0, 1, -1, 59, 3600, 86400 * 30, 86400 * 30 + 1, 86400 * 3650,
                                         86400 * 3650 + 1, 10 ** 12, 10 ** 14, 2 ** 63 - 1, -(2 ** 63)]),
                        st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1))
    nanos = st.one_of(st.just(0), st.integers(min_value=-(2 ** 31), max_value=2 ** 31 - 1))
    return st.tuples(seconds, nanos)


# --- hand-built tokens -----------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sign_raw(signer: SigningKey, header: bytes, payload: bytes) -> str:
    """A compact JWS over exactly these header and payload bytes (which need not be valid JSON),
    signed with the signer's real key and algorithm."""
    signing_input = f"{b64url(header)}.{b64url(payload)}".encode("ascii")
    algorithm = jwt.get_algorithm_by_name(signer.alg)
    key = signer.secret if signer.alg == "HS256" else signer.private_key
    return f"{signing_input.decode('ascii')}.{b64url(algorithm.sign(signing_input, key))}"


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """HS256 by hand, for secrets PyJWT refuses to use (e.g. a PEM public key: the confusion attack)."""
    signing_input = f"{b64url(json_bytes(header))}.{b64url(json_bytes(claims))}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64url(json_bytes(header))}.{b64url(json_bytes(claims))}.{signature}"


def flip_signature_bit(token: str, byte_index: int, bit: int = 0) -> str:
    """The token with one bit of its decoded signature flipped (then re-encoded canonically, so the
    change is never lost in base64's unused trailing bits)."""
    head, payload, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[byte_index % len(raw)] ^= 1 << bit
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def mutate_token(token: str, position: int, replacement: str) -> str:
    """The token with one character of its signing input (header or payload segment) replaced by a
    different one: the signature covers that text, so the result can never verify."""
    signing_input_length = token.rindex(".")
    index = position % signing_input_length
    if token[index] == ".":
        index = max(0, index - 1)
    new = replacement if replacement != token[index] else ("A" if token[index] != "A" else "B")
    return token[:index] + new + token[index + 1:]


def mutate_opaque(secret: str, prefix: str, position: int, replacement: str) -> str:
    """An API key or connect token with one character after its prefix replaced by another one:
    the CRC32 checksum catches every single-character change."""
    index = len(prefix) + position % (len(secret) - len(prefix))
    new = replacement if replacement != secret[index] else ("A" if secret[index] != "A" else "B")
    return secret[:index] + new + secret[index + 1:]
