"""Fetching remote issuers' keys: OpenID Connect Discovery documents and JWK Sets, over HTTPS.

Everything fetched comes from a URL an operator registered, never from a token (jku, x5u and
friends stay ignored), and every fetch is bounded:
- https:// with certificate verification (the system's CAs, or a CA bundle for private PKIs);
  http:// only to a loopback address and only when explicitly allowed (tests, local work);
  no other scheme, no credentials in the URL;
- redirects only within the same scheme, host and port, at most a few;
- the connection and the whole response within one deadline, the body within a byte limit
  (counted after decompression, so a compressed bomb stops at the limit too).
Failures raise KeyFetchFailed with an outcome label for metrics and a message for operators
that never quotes the body received.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ..domain.errors import KeyFetchFailed
from ..domain.ports import FetchedKeySet
from ..domain.text import excerpt
from .jwks import load_remote_jwks

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048


class HttpKeySetFetcher:
    """Implements domain.ports.KeySetFetcher. Thread-safe: each fetch has its own connection."""

    def __init__(self, *, timeout_seconds: float = 5.0, max_bytes: int = 256 * 1024, ca_file: Path | None = None,
                 allow_loopback_http: bool = False) -> None:
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._allow_loopback_http = allow_loopback_http
        # Built once: loading a CA bundle costs milliseconds. A bad bundle fails here, at start-up.
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def check_url(self, url: str) -> None:
        if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
            raise _refused("the URL is empty or too long")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise _refused(f"{excerpt(url)} is not a valid URL") from None
        loopback_http = parts.scheme == "http" and bool(host) and _is_loopback(host or "")
        if parts.scheme != "https" and not loopback_http:
            raise _refused(f"{excerpt(url)} is not an https:// URL (plain http:// is allowed only to a loopback "
                           "address, with TOLLGATE_JWKS_ALLOW_LOOPBACK_HTTP=true)")
        if not host:
            raise _refused(f"{excerpt(url)} names no host")
        if parts.username is not None or parts.password is not None:
            raise _refused("a URL with credentials in it is refused")
        if loopback_http and not self._allow_loopback_http:
            raise _refused(f"{excerpt(url)} is plain HTTP; it is allowed only to a loopback address with "
                           "TOLLGATE_JWKS_ALLOW_LOOPBACK_HTTP=true")

    def discover(self, discovery_url: str, issuer: str) -> str:
        document, _ = self._get_json(discovery_url, "discovery document")
        if not isinstance(document, dict):
            raise KeyFetchFailed("the discovery document is not a JSON object", outcome="invalid_document")
        named = document.get("issuer")
        # OpenID Connect Discovery section 4.3: exactly equal, or the document is not the issuer's.
        if named != issuer:
            shown = excerpt(named) if isinstance(named, str) else "no issuer"
            raise KeyFetchFailed(f"the discovery document names {shown}, not {excerpt(issuer)}",
                                 outcome="issuer_mismatch")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeyFetchFailed("the discovery document has no jwks_uri", outcome="invalid_document")
        self.check_url(jwks_uri)
        return jwks_uri

    def fetch(self, jwks_uri: str) -> FetchedKeySet:
        document, headers = self._get_json(jwks_uri, "JWK Set")
        try:
            jwks, ignored = load_remote_jwks(document)
        except ValueError as error:
            raise KeyFetchFailed(f"the JWK Set was refused: {error}", outcome="invalid_keys") from None
        return FetchedKeySet(jwks=jwks, max_age_seconds=max_age(headers), ignored=ignored)

    # -- one bounded GET -----------------------------------------------------------------------

    def _get_json(self, url: str, what: str) -> tuple[Any, httpx.Headers]:
        body, headers = self._get(url, what)
        try:
            return json.loads(body), headers
        except (ValueError, RecursionError):
            raise KeyFetchFailed(f"the {what} is not valid JSON", outcome="invalid_json") from None

    def _get(self, url: str, what: str) -> tuple[bytes, httpx.Headers]:
        self.check_url(url)
        deadline = time.monotonic() + self._timeout
        timeout = httpx.Timeout(self._timeout)
        try:
            # trust_env=False: no proxy or .netrc from the environment decides where keys come from.
            with httpx.Client(verify=self._tls, timeout=timeout, follow_redirects=False, trust_env=False,
                              headers={"accept": "application/json", "user-agent": "tollgate"}) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    with client.stream("GET", url) as response:
                        if response.is_redirect:
                            url = self._redirect_target(url, response)
                            continue
                        if response.status_code != 200:
                            raise KeyFetchFailed(f"the {what} at {excerpt(url)} answered HTTP {response.status_code}",
                                                 outcome="http_error")
                        return self._body(response, what, deadline), response.headers
        except httpx.TimeoutException:
            raise _timed_out(what, self._timeout) from None
        except httpx.HTTPError as error:
            raise _connection_failed(what, url, error) from None
        raise KeyFetchFailed(f"the {what} redirected more than {MAX_REDIRECTS} times", outcome="redirect_refused")

    def _redirect_target(self, url: str, response: httpx.Response) -> str:
        target = urljoin(url, response.headers.get("location", ""))
        if _origin(target) != _origin(url):
            raise KeyFetchFailed(f"a redirect from {excerpt(url)} to another origin was refused",
                                 outcome="redirect_refused")
        self.check_url(target)
        return target

    def _body(self, response: httpx.Response, what: str, deadline: float) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise _too_large(what, self._max_bytes)
        body = bytearray()
        # iter_bytes decodes gzip/deflate: the limit counts what would be parsed.
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self._max_bytes:
                raise _too_large(what, self._max_bytes)
            if time.monotonic() > deadline:
                # A server dripping bytes never trips the read timeout; the deadline stops it.
                raise _timed_out(what, self._timeout)
        return bytes(body)


def max_age(headers: httpx.Headers) -> float | None:
    """Seconds the response may be used for, by its Cache-Control (less its Age); None when it
    says nothing. no-store and no-cache count as 0 (the caller's floor applies)."""
    directives: dict[str, str] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        directives.setdefault(name.strip().lower(), value.strip().strip('"'))
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    seconds = directives.get("max-age", "")
    if not seconds.isdigit():
        return None
    age = headers.get("age", "")
    return max(0.0, float(seconds) - (float(age) if age.isdigit() else 0.0))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"https": 443, "http": 80}.get(parts.scheme)


def _refused(message: str) -> KeyFetchFailed:
    return KeyFetchFailed(message, outcome="url_refused")


def _too_large(what: str, limit: int) -> KeyFetchFailed:
    return KeyFetchFailed(f"the {what} is larger than {limit} bytes", outcome="too_large")


def _timed_out(what: str, seconds: float) -> KeyFetchFailed:
    return KeyFetchFailed(f"the {what} did not arrive within {seconds:g} s", outcome="timeout")


def _connection_failed(what: str, url: str, error: httpx.HTTPError) -> KeyFetchFailed:
    if _is_certificate_error(error):
        return KeyFetchFailed(f"the certificate of {excerpt(url)} could not be verified (for a private CA, set "
                              "TOLLGATE_JWKS_CA_FILE)", outcome="tls")
    return KeyFetchFailed(f"the {what} at {excerpt(url)} could not be fetched: {type(error).__name__}",
                          outcome="connect")


def _is_certificate_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
