"""The route table: HTTP method + path template -> operation, and where each resource id comes from.

Used by the ext_authz adapter to turn an HTTP request into the same check the native API takes.
Templates are literal segments and `{name}` parameters that match exactly one non-empty segment.
A route may also say which query parameter carries an API key on it (off unless the policy says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote

from .errors import PolicyError

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RESOURCE_FIELDS = ("user_id", "organization_id", "customer_id")
_SOURCES = ("path", "query", "header")
_PARAMETER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")
# A query parameter that may carry an API key: RFC 3986 unreserved characters only, a name that
# never needs percent-encoding (it is matched as sent, as Envoy matches it) and is safe to quote.
_QUERY_PARAMETER = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
API_KEY_QUERY_PARAMETER = "api_key_query_parameter"  # the policy key, in `sidecar` and on a route


@dataclass(frozen=True)
class ValueSource:
    """Where one resource id is read: a path parameter, a query parameter or a request header."""

    kind: str  # "path" | "query" | "header"
    name: str

    def read(self, path_parameters: Mapping[str, str], query: Mapping[str, list[str]],
             headers: Mapping[str, str]) -> str:
        if self.kind == "path":
            return path_parameters.get(self.name, "")
        if self.kind == "query":
            values = query.get(self.name, [])
            return values[0] if len(values) == 1 else ""  # ambiguous repeats read as absent
        return headers.get(self.name.lower(), "")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    segments: tuple[str, ...]  # literal text, or "{name}" for a parameter
    operation: str
    resource: Mapping[str, ValueSource]
    # The query parameter that carries an API key on this route, "" when none does (the route's
    # own setting, else the policy's sidecar.api_key_query_parameter).
    api_key_query_parameter: str = ""

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        if method != self.method or len(segments) != len(self.segments):
            return None
        parameters = {}
        for pattern, name, segment in zip(self.segments, self._parameter_names, segments, strict=True):
            if name is not None:
                parameters[name] = segment
            elif pattern != segment:
                return None
        return parameters

    @cached_property
    def _parameter_names(self) -> tuple[str | None, ...]:
        """Per segment, the parameter it names or None for a literal: matched once, not per request."""
        return tuple(found.group(1) if (found := _PARAMETER.match(s)) else None for s in self.segments)


@dataclass(frozen=True)
class RoutedRequest:
    operation: str
    resource: Mapping[str, str]
    api_key_query_parameter: str = ""  # the matched route's (see Route)


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...] = ()
    # The policy's sidecar.api_key_query_parameter: for requests no route matches (an operation
    # named by Envoy's context_extensions); "" when off.
    api_key_query_parameter: str = ""

    def resolve(self, method: str, raw_path: str, headers: Mapping[str, str]) -> RoutedRequest | None:
        """The operation and resource ids of a request; None when no route matches.
        Literal routes win over parameterised ones at the same position (declaration order next)."""
        path, _, query_string = raw_path.partition("?")
        path = path.partition("#")[0]
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        if any(s in ("", ".", "..") for s in segments):
            return None  # empty or dot segments are refused rather than normalised
        query = parse_qs(query_string, keep_blank_values=False) if query_string else {}
        for route in self._ordered:
            parameters = route.match(method.upper(), segments)
            if parameters is not None:
                resource = {f: src.read(parameters, query, headers) for f, src in route.resource.items()}
                return RoutedRequest(route.operation, resource, route.api_key_query_parameter)
        return None

    def api_key_query_parameter_of(self, routed: RoutedRequest | None) -> str:
        """The query parameter that carries an API key for a request resolve() answered `routed`
        for; "" when none does."""
        return routed.api_key_query_parameter if routed is not None else self.api_key_query_parameter

    @cached_property
    def header_names(self) -> tuple[str, ...]:
        """The request headers (lower-cased) that some route reads a resource id from: with the
        method and the raw path, all of a request that resolve() looks at."""
        return tuple(sorted({source.name.lower() for route in self.routes for source in route.resource.values()
                             if source.kind == "header"}))

    @cached_property
    def _ordered(self) -> tuple[Route, ...]:
        # Sorted once per table (a table never changes; a policy reload builds a new one), not per request.
        return tuple(sorted(self.routes, key=lambda r: tuple(bool(_PARAMETER.match(s)) for s in r.segments)))


def query_parameter_values(raw_path: str, name: str) -> tuple[str, ...]:
    """Every value of the query parameter `name` in a raw request path (`/p?a=1&b=2`), in order,
    percent-decoded ("+" stays "+"); a parameter without a value counts as an empty one. Names are
    matched as sent, not decoded, as Envoy matches them when it removes a parameter: a parameter
    Envoy would not remove (`api%5Fkey=`) must never be taken for the one it removes."""
    query_string = raw_path.partition("?")[2]
    if not query_string:
        return ()
    values = []
    for pair in query_string.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            values.append(unquote(value))
    return tuple(values)


def parse_api_key_query_parameter(value: Any, path: str) -> str:
    """`api_key_query_parameter`: a query parameter name, or "" for none."""
    if value == "":
        return ""
    if not isinstance(value, str) or not _QUERY_PARAMETER.match(value):
        raise PolicyError(f"{path} must be a query parameter name of 1 to 64 letters, digits and . _ ~ - "
                          f"(e.g. api_key), or \"\" for none", field=path)
    return value


def parse_routes(value: Any, operations: Mapping[str, Any], api_key_query_parameter: str = "") -> RouteTable:
    """Builds the table from the policy's `routes` list; PolicyError names routes[i].key.
    `api_key_query_parameter`: the sidecar's, for routes that do not set their own."""
    if value is None:
        return RouteTable(api_key_query_parameter=api_key_query_parameter)
    if not isinstance(value, list):
        raise PolicyError("routes must be a list", field="routes")
    routes = [_parse_route(spec, f"routes[{index}]", operations, api_key_query_parameter)
              for index, spec in enumerate(value)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for index, route in enumerate(routes):
        shape = (route.method, tuple("{}" if _PARAMETER.match(s) else s for s in route.segments))
        if shape in seen:
            raise PolicyError(f"routes[{index}]: {route.method} {route.template} repeats an earlier route",
                              field=f"routes[{index}].match")
        seen.add(shape)
    return RouteTable(tuple(routes), api_key_query_parameter)


_ROUTE_KEYS = {"match", "operation", "resource", API_KEY_QUERY_PARAMETER}


def _parse_route(spec: Any, path: str, operations: Mapping[str, Any], default_key_parameter: str) -> Route:
    if not isinstance(spec, Mapping) or set(spec) - _ROUTE_KEYS:
        raise PolicyError(f"{path} must have match, operation and optionally resource and "
                          f"{API_KEY_QUERY_PARAMETER}", field=path)
    method, _, template = str(spec.get("match", "")).partition(" ")
    if method not in HTTP_METHODS or not template.startswith("/"):
        raise PolicyError(f"{path}.match must be 'METHOD /path/template'", field=f"{path}.match")
    segments = tuple(s for s in template.strip("/").split("/") if s)
    for segment in segments:
        if not (_PARAMETER.match(segment) or _LITERAL.match(segment)):
            raise PolicyError(f"{path}.match: bad path segment {segment!r}", field=f"{path}.match")
    operation = spec.get("operation")
    if not isinstance(operation, str) or operation not in operations:
        raise PolicyError(f"{path}.operation {operation!r} is not a declared operation", field=f"{path}.operation")
    parameters = {m.group(1) for m in map(_PARAMETER.match, segments) if m}
    resource = _parse_resource(spec.get("resource") or {}, f"{path}.resource", parameters)
    key_parameter = default_key_parameter
    if API_KEY_QUERY_PARAMETER in spec:
        key_parameter = parse_api_key_query_parameter(spec[API_KEY_QUERY_PARAMETER],
                                                      f"{path}.{API_KEY_QUERY_PARAMETER}")
    for field_name, source in resource.items():
        if key_parameter and source.kind == "query" and source.name == key_parameter:
            raise PolicyError(f"{path}.resource.{field_name} reads the query parameter {key_parameter!r}, which "
                              "carries the API key on this route", field=f"{path}.resource.{field_name}")
    return Route(method, template, segments, operation, MappingProxyType(resource), key_parameter)


def _parse_resource(spec: Any, path: str, parameters: set[str]) -> dict[str, ValueSource]:
    if not isinstance(spec, Mapping):
        raise PolicyError(f"{path} must map resource fields to sources", field=path)
    resource = {}
    for field_name, source in spec.items():
        if field_name not in RESOURCE_FIELDS:
            raise PolicyError(f"{path}: {field_name!r} is not one of {', '.join(RESOURCE_FIELDS)}",
                              field=f"{path}.{field_name}")
        kind, _, name = str(source).partition(".")
        if kind not in _SOURCES or not name or (kind == "path" and name not in parameters):
            raise PolicyError(f"{path}.{field_name} must be path.<parameter in the template>, query.<name> "
                              f"or header.<name>", field=f"{path}.{field_name}")
        resource[field_name] = ValueSource(kind, name)
    return resource
