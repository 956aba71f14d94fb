"""What every endpoint shares: the token use case, errors translated in one place, blocking work
run off the event loop, and a count of every answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..domain.errors import DomainError
from ..domain.oauth import OAuthError
from ..domain.policy import Policy
from ..telemetry import Telemetry
from ..usecases.tokens import TokenService
from .errors import domain_error_response, oauth_error_response, server_error

log = logging.getLogger("tollgate.http")
Result = TypeVar("Result")


class Endpoint:
    """An ASGI endpoint: `answer` builds the response; errors become responses here, so that
    no exception (and no stack trace) reaches the client."""

    name = "endpoint"

    def __init__(self, tokens: TokenService, policy: Callable[[], Policy], realm: str, telemetry: Telemetry) -> None:
        self.tokens = tokens
        self.policy = policy
        self.realm = realm
        self._telemetry = telemetry

    async def handle(self, request: Request) -> Response:
        try:
            response = await self.answer(request)
        except OAuthError as error:
            response = oauth_error_response(error, self.realm)
        except DomainError as error:
            response = domain_error_response(error)
        except Exception:  # the last line of defence: never a stack trace to the client
            log.exception("unexpected error in the %s endpoint", self.name)
            response = server_error()
        self._telemetry.record_token_request(self.name, response.status_code)
        return response

    async def answer(self, request: Request) -> Response:
        raise NotImplementedError

    @staticmethod
    async def run(function: Callable[..., Result], *args: Any) -> Result:
        """Store reads and writes block: they run on the thread pool, never on the event loop."""
        return await run_in_threadpool(function, *args)
