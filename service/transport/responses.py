"""Responses built once per decision and copied: what makes a cached Check cheap in the transport.

Two checks that reach the same Decision (the same credential on the same operation, say) answer
with the same message except for the decision id. Building a response field by field (principal,
grants, identity headers, metadata structs) costs more CPU than deciding; copying a prebuilt one and
setting its decision id costs a few µs, and appending the decision id to the template's encoding
(concatenated encodings of a message decode as one message) costs less still.

Each servicer owns its templates (its realm is fixed, so a native template is keyed by the Decision
alone). Keys are values, so a template can never answer for another decision; a Decision hashes
once (domain/decision.py), so a decision given again (the decision memo's) finds its template at the
cost of one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import Message
from tollgate.v1 import authorization_pb2

from ..domain.bounded import BoundedMap
from ..domain.decision import Decision
from ..domain.explain import Step
from .convert import add_explanation, check_response_template
from .ext_authz_convert import ext_authz_template, fill_ext_authz_response

Response = TypeVar("Response", bound=Message)

# Denies can carry request text (an unknown operation), so the tables are bounded (emptied when
# full: the steady state refills them within a few calls).
MAX_TEMPLATES = 4096


class _Templates(Generic[Response]):
    """Each template kept with its encoding (`encode`'s: by default the message's own, b"" where
    it may not be used). `kept` is the lookup (a dict's get: a hit costs no Python frame); `made`
    builds, keeps and returns what it lacks."""

    def __init__(self, encode: Callable[[Response], bytes] = lambda message: message.SerializeToString()) -> None:
        self._kept: BoundedMap[Hashable, tuple[Response, bytes]] = BoundedMap(MAX_TEMPLATES)
        self.kept = self._kept.get
        self._encode = encode

    def made(self, key: Hashable, build: Callable[..., Response], *arguments: object) -> tuple[Response, bytes]:
        """`build(*arguments)`'s template, kept for `key` (racing handler threads store equal ones)."""
        message = build(*arguments)
        template = (message, self._encode(message))
        self._kept.put(key, template)
        return template


class CheckResponses:
    """tollgate.v1 CheckResponses of one realm."""

    def __init__(self, realm: str) -> None:
        self._realm = realm
        self._templates: _Templates[authorization_pb2.CheckResponse] = _Templates()
        self._kept = self._templates.kept

    def serialized(self, decision: Decision, decision_id: str) -> bytes:
        """The response's encoding, made without a message: the template's, with the decision id's
        field after it."""
        template = (self._kept(decision) or self._made(decision))[1]
        if len(decision_id) == len(_DECISION_ID_SAMPLE) and decision_id.isascii():
            return template + _DECISION_ID_FIELD_START + decision_id.encode("ascii")
        return template + authorization_pb2.CheckResponse(decision_id=decision_id).SerializeToString()

    def message(self, decision: Decision, decision_id: str,
                steps: tuple[Step, ...] | None = None) -> authorization_pb2.CheckResponse:
        """A message of its own (a copy of the template), with the explanation when there are steps."""
        response = authorization_pb2.CheckResponse()
        response.CopyFrom((self._kept(decision) or self._made(decision))[0])
        response.decision_id = decision_id
        if steps is not None:
            add_explanation(response, steps)
        return response

    def _made(self, decision: Decision) -> tuple[authorization_pb2.CheckResponse, bytes]:
        return self._templates.made(decision, check_response_template, decision, self._realm)


# The encoding of decision_id = <32 characters> up to its value (tag and length), from protobuf
# itself: every id of new_decision_id() has that length.
_DECISION_ID_SAMPLE = "0" * 32
_DECISION_ID_FIELD_START = authorization_pb2.CheckResponse(decision_id=_DECISION_ID_SAMPLE).SerializeToString()[
    :-len(_DECISION_ID_SAMPLE)]


class ExtAuthzResponses:
    """Envoy ext_authz CheckResponses of one realm. A template holds DECISION_ID_PLACEHOLDER where
    each response holds its decision id; its encoding has the id written over the placeholder's
    bytes (the same length, so every length prefix stays right)."""

    def __init__(self, realm: str) -> None:
        self._realm = realm
        self._templates: _Templates[external_auth_pb2.CheckResponse] = _Templates(_placeholder_encoding)
        self._kept = self._templates.kept

    def response(self, decision: Decision, decision_id: str, *, operation: str, strip_credentials: bool,
                 remove_query_parameters: tuple[str, ...] = ()) -> external_auth_pb2.CheckResponse:
        response = external_auth_pb2.CheckResponse()
        response.CopyFrom(self._template(decision, operation, strip_credentials)[0])
        fill_ext_authz_response(response, decision, decision_id, remove_query_parameters)
        return response

    def serialized(self, decision: Decision, decision_id: str, operation: str, strip_credentials: bool,
                   remove_query_parameters: tuple[str, ...] = ()) -> bytes:
        """response()'s encoding, made without a message unless there are query parameters to
        remove."""
        encoding = self._template(decision, operation, strip_credentials)[1]
        if encoding and not remove_query_parameters and len(decision_id) == _PLACEHOLDER_LENGTH:
            return encoding.replace(_PLACEHOLDER_BYTES, decision_id.encode("ascii"))
        return self.response(decision, decision_id, operation=operation, strip_credentials=strip_credentials,
                             remove_query_parameters=remove_query_parameters).SerializeToString()

    def _template(self, decision: Decision, operation: str,
                  strip_credentials: bool) -> tuple[external_auth_pb2.CheckResponse, bytes]:
        key = (decision, operation, strip_credentials)
        return self._kept(key) or self._templates.made(
            key, ext_authz_template, decision, self._realm, operation, strip_credentials, DECISION_ID_PLACEHOLDER)


def _placeholder_encoding(template: external_auth_pb2.CheckResponse) -> bytes:
    """The template's encoding, or b"" where the placeholder is also elsewhere than where the id
    goes (an operation's text could hold it): that template is encoded per call. The id goes in
    the metadata, and on an allow also in the ok response's metadata and its first header (see
    fill_ext_authz_response)."""
    encoding = template.SerializeToString()
    return encoding if encoding.count(_PLACEHOLDER_BYTES) == (3 if template.HasField("ok_response") else 1) else b""


# As long as every id of new_decision_id() (hex digits, so ASCII), and never one of them.
DECISION_ID_PLACEHOLDER = "<decision id:" + "_" * 18 + ">"
_PLACEHOLDER_BYTES = DECISION_ID_PLACEHOLDER.encode("ascii")
_PLACEHOLDER_LENGTH = len(DECISION_ID_PLACEHOLDER)
