"""Responses built once per decision and copied: what makes a cached Check cheap in the transport.

Two checks that reach the same Decision (the same credential on the same operation, say) answer
with the same message except for the decision id. Building a response field by field (principal,
grants, identity headers, metadata structs) costs more CPU than deciding; copying a prebuilt one
and setting its decision id costs a few µs, and appending the decision id to the template's
encoding (concatenated encodings of a message decode as one message) costs less still. Keys are
values (a Decision and whatever else the response depends on), so a template can never answer for
another decision. A decision recalled from the decision memo is the very object of the earlier
check, so the templates of recalled decisions are also found by identity, without hashing the
Decision (its principal, its grants) again; freshly made decisions are new objects every time, so
they go by value only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from google.protobuf.message import Message

Response = TypeVar("Response", bound=Message)

MAX_TEMPLATES = 4096


class ResponseTemplates(Generic[Response]):
    def __init__(self, message_type: type[Response], max_entries: int = MAX_TEMPLATES) -> None:
        self._message_type = message_type
        self._max_entries = max_entries
        # A plain dict: handler threads racing on one key store equal templates. Denies can carry
        # request text (an unknown operation), so the table is bounded; emptied when full, as
        # the steady state refills it within a few calls. Each template is kept with its encoding.
        self._templates: dict[Hashable, tuple[Response, bytes]] = {}
        # id(decision) -> (decision, details, template); the entry holds the decision, so its id
        # is not reused while the entry is there.
        self._by_identity: dict[int, tuple[object, Hashable, tuple[Response, bytes]]] = {}

    def copy(self, decision: Hashable, details: Hashable, build: Callable[[], Response]) -> Response:
        """A fresh copy of the template for `decision` and `details` (whatever else the response
        depends on; built by `build` on first use); the caller owns it and sets its decision id."""
        response = self._message_type()
        response.CopyFrom(self._template(decision, details, build, recalled=False)[0])
        return response

    def serialized(self, decision: Hashable, details: Hashable, build: Callable[[], Response], *,
                   recalled: bool = False) -> bytes:
        """The template's encoding (arguments as for copy()), for a caller that appends the
        per-call fields as bytes. `recalled`: the decision came from the decision memo (the same
        object will come again)."""
        return self._template(decision, details, build, recalled)[1]

    def _template(self, decision: Hashable, details: Hashable, build: Callable[[], Response],
                  recalled: bool) -> tuple[Response, bytes]:
        known = self._by_identity.get(id(decision)) if recalled else None
        if known is not None and known[0] is decision and known[1] == details:
            return known[2]
        key = (decision, details)
        template = self._templates.get(key)
        if template is None:
            message = build()
            template = (message, message.SerializeToString())
            if len(self._templates) >= self._max_entries:
                self._templates.clear()
            self._templates[key] = template
        if recalled:
            if len(self._by_identity) >= self._max_entries:
                self._by_identity.clear()
            self._by_identity[id(decision)] = (decision, details, template)
        return template
