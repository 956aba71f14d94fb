"""The route table: HTTP method + path template -> operation, and where each resource id comes from.

Used by the ext_authz adapter to turn an HTTP request into the same check the native API takes.
Templates are literal segments and `{name}` parameters that match exactly one non-empty segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote

from .errors import PolicyError

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RESOURCE_FIELDS = ("user_id", "organization_id", "customer_id")
_SOURCES = ("path", "query", "header")
_PARAMETER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")


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

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        if method != self.method or len(segments) != len(self.segments):
            return None
        parameters = {}
        for pattern, name, segment in zip(self.segments, self._parameter_names, segments):
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


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...] = ()

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
                return RoutedRequest(route.operation, resource)
        return None

    @cached_property
    def _ordered(self) -> tuple[Route, ...]:
        # Sorted once per table (a table never changes; a policy reload builds a new one), not per request.
        return tuple(sorted(self.routes, key=lambda r: tuple(bool(_PARAMETER.match(s)) for s in r.segments)))


def parse_routes(value: Any, operations: Mapping[str, Any]) -> RouteTable:
    """Builds the table from the policy's `routes` list; PolicyError names routes[i].key."""
    if value is None:
        return RouteTable()
    if not isinstance(value, list):
        raise PolicyError("routes must be a list", field="routes")
    routes = [_parse_route(spec, f"routes[{index}]", operations) for index, spec in enumerate(value)]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for index, route in enumerate(routes):
        shape = (route.method, tuple("{}" if _PARAMETER.match(s) else s for s in route.segments))
        if shape in seen:
            raise PolicyError(f"routes[{index}]: {route.method} {route.template} repeats an earlier route",
                              field=f"routes[{index}].match")
        seen.add(shape)
    return RouteTable(tuple(routes))


def _parse_route(spec: Any, path: str, operations: Mapping[str, Any]) -> Route:
    if not isinstance(spec, Mapping) or set(spec) - {"match", "operation", "resource"}:
        raise PolicyError(f"{path} must have match, operation and optionally resource", field=path)
    method, _, template = str(spec.get("match", "")).partition(" ")
    if method not in HTTP_METHODS or not template.startswith("/"):
        raise PolicyError(f"{path}.match must be 'METHOD /path/template'", field=f"{path}.match")
    segments = tuple(s for s in template.strip("/").split("/") if s)
    for segment in segments:
        if not (_PARAMETER.match(segment) or _LITERAL.match(segment)):
            raise PolicyError(f"{path}.match: bad path segment {segment!r}", field=f"{path}.match")
    operation = spec.get("operation")
    if operation not in operations:
        raise PolicyError(f"{path}.operation {operation!r} is not a declared operation", field=f"{path}.operation")
    parameters = {m.group(1) for m in map(_PARAMETER.match, segments) if m}
    resource = _parse_resource(spec.get("resource") or {}, f"{path}.resource", parameters)
    return Route(method, template, segments, operation, MappingProxyType(resource))


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
