"""Variants of the example policy, written where a server can load them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .world import EXAMPLE_POLICY


def example_policy_document() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_POLICY.read_text())


def with_api_key_query_parameter(document: dict[str, Any], parameter: str | None = "api_key",
                                 routes: dict[str, str] | None = None) -> dict[str, Any]:
    """`document` with sidecar.api_key_query_parameter = `parameter` (None: left out) and, per
    route (by its `match`, e.g. "PATCH /v1/users/{userId}"), the route's own setting."""
    changed = copy.deepcopy(document)
    if parameter is not None:
        changed.setdefault("sidecar", {})["api_key_query_parameter"] = parameter
    for match, value in (routes or {}).items():
        (route,) = [r for r in changed["routes"] if r["match"] == match]
        route["api_key_query_parameter"] = value
    return changed


def write_policy(document: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
