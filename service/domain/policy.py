"""The policy: declared scopes (with aliases), roles and operations, built from a plain mapping.

Parsing a document into a Policy is pure; reading the YAML file (and its line numbers) happens in
service/policy_file.py. Every error names the key path that is wrong.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .bounded import BoundedMap
from .errors import PolicyError
from .model import CredentialKind, SubjectType
from .routes import API_KEY_QUERY_PARAMETER, RouteTable, parse_api_key_query_parameter, parse_routes
from .scopes import ADMIN_GRANT, ALL_SCOPES_WRITE, LEVEL_WORDS, GrantSet, Permission
from .text import excerpt

MAX_PARSED_GRANT_SETS = 10_000
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_CLAIM_NAME_LENGTH = 256


class TokenUser(enum.StrEnum):
    """What an operation demands of the user a token acts for (the policy's token_user_claim).
    Either way a credential acting for no user (an API key, a client-credentials token) is denied."""

    # The token's user must be the request's resource.user_id.
    SELF = "self"
    # The token's user must have an active relation with the token's partner.
    RELATED = "related"


@dataclass(frozen=True)
class Operation:
    name: str
    # Public operations are allowed without any credential.
    public: bool = False
    permissions: tuple[Permission, ...] = ()
    # Subjects the partner needs an active relation with (taken from the request's resource).
    relations: frozenset[SubjectType] = frozenset()
    # The request must carry a customer number that the credential may act for.
    requires_customer: bool = False
    # The user the token acts for must be the resource's user (self) or related to the partner.
    token_user: TokenUser | None = None


@dataclass(frozen=True)
class Policy:
    scopes: Mapping[str, str]  # every accepted name or alias -> canonical scope name
    roles: Mapping[str, GrantSet]
    operations: Mapping[str, Operation]
    routes: RouteTable = RouteTable()
    # Sidecar behaviour: drop the credential headers before the request reaches the upstream.
    strip_credential_headers: bool = False
    # Roles a credential of a kind ("api_key", "jwt", "oauth_client") acts with when it has no
    # grants of its own; a kind not named inherits its partner's grants (the partner's grants stay
    # the ceiling either way).
    kind_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The role a partner created without roles or grants gets (None: it gets none).
    default_role: str | None = None
    # The verified token claim naming the user a token acts for (None: tokens act for no user).
    token_user_claim: str | None = None
    # Parsed grant sets by their inputs: Check parses the same few grant lists on every call.
    _parsed: BoundedMap[tuple, GrantSet] = field(
        default_factory=lambda: BoundedMap(MAX_PARSED_GRANT_SETS), compare=False, repr=False)

    @functools.cached_property
    def scope_names(self) -> frozenset[str]:
        # Once per policy (every allow lists its grants over these): one set, its hash kept.
        return frozenset(self.scopes.values())

    def parse_permission(self, text: str) -> Permission:
        """"user:read", OAuth "read:user", alias "read:bookings". ValueError when not understood."""
        left, sep, right = text.strip().partition(":")
        if not sep:
            raise ValueError(f"{excerpt(text)} is not of the form scope:level or level:scope")
        if right.lower() in LEVEL_WORDS and left in self.scopes:
            return Permission(self.scopes[left], LEVEL_WORDS[right.lower()])
        if left.lower() in LEVEL_WORDS and right in self.scopes:
            return Permission(self.scopes[right], LEVEL_WORDS[left.lower()])
        raise ValueError(f"{excerpt(text)} names no declared scope at a level (none, read, write)")

    def grants_from(self, grants: Iterable[str], roles: Iterable[str], *, strict: bool) -> GrantSet:
        """The union of grant strings and named roles. With strict=False (token scopes), strings
        that are not ours ("openid", "profile") are ignored; with strict=True they raise ValueError."""
        key = (tuple(grants), tuple(roles), strict)
        found = self._parsed.get(key)
        if found is None:
            found = self._grants_from(*key)
            self._parsed.put(key, found)
        return found

    def _grants_from(self, grants: tuple[str, ...], roles: tuple[str, ...], strict: bool) -> GrantSet:
        result = GrantSet()
        for text in grants:
            if text.strip().lower() == ADMIN_GRANT:
                result = result.union(ALL_SCOPES_WRITE)
                continue
            try:
                permission = self.parse_permission(text)
            except ValueError:
                if strict:
                    raise
                continue
            result = result.union(GrantSet({permission.scope: permission.level}))
        for role in roles:
            if role not in self.roles:
                if strict:
                    raise ValueError(f"unknown role {excerpt(role)}")
                continue
            result = result.union(self.roles[role])
        return result


def parse_policy(document: Any) -> Policy:
    """Builds a Policy from a parsed document; raises PolicyError naming the offending key path."""
    if not isinstance(document, Mapping):
        raise PolicyError("the policy must be a mapping with scopes, roles and operations", field="(root)")
    unknown = set(document) - {"version", "scopes", "roles", "operations", "routes", "sidecar", "credential_kinds",
                               "default_role", "token_user_claim"}
    if unknown:
        raise PolicyError(f"unknown top-level key {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    if document.get("version", 1) != 1:
        raise PolicyError("only version 1 is supported", field="version")
    scopes = _parse_scopes(document.get("scopes"))
    draft = Policy(scopes=scopes, roles={}, operations={})
    roles = _parse_roles(document.get("roles"), draft)
    draft = Policy(scopes=scopes, roles=roles, operations={})
    operations = _parse_operations(document.get("operations"), draft)
    token_user_claim = _parse_token_user_claim(document.get("token_user_claim"), operations)
    return Policy(
        scopes=MappingProxyType(dict(scopes)),
        roles=MappingProxyType(dict(roles)),
        operations=MappingProxyType(dict(operations)),
        routes=parse_routes(document.get("routes"), operations, _sidecar_api_key_parameter(document.get("sidecar"))),
        strip_credential_headers=_parse_sidecar(document.get("sidecar")),
        kind_roles=MappingProxyType(_parse_credential_kinds(document.get("credential_kinds"), roles)),
        default_role=_parse_default_role(document.get("default_role"), roles),
        token_user_claim=token_user_claim,
    )


CREDENTIAL_KINDS = tuple(kind.value for kind in CredentialKind)


def _parse_credential_kinds(value: Any, roles: Mapping[str, GrantSet]) -> dict[str, tuple[str, ...]]:
    """credential_kinds: {api_key: {roles: [api-user]}, ...}: the roles each kind acts with."""
    kinds: dict[str, tuple[str, ...]] = {}
    for kind, spec in _mapping(value, "credential_kinds", required=False).items():
        path = f"credential_kinds.{kind}"
        if kind not in CREDENTIAL_KINDS:
            raise PolicyError(f"{path}: the kinds are {', '.join(CREDENTIAL_KINDS)}", field=path)
        if not isinstance(spec, Mapping) or set(spec) - {"roles"}:
            raise PolicyError(f"{path} must be a mapping with roles", field=path)
        names = _string_list(spec.get("roles"), f"{path}.roles")
        for index, role in enumerate(names):
            if role not in roles:
                raise PolicyError(f"{path}.roles[{index}]: unknown role {role!r}", field=f"{path}.roles[{index}]")
        kinds[kind] = tuple(dict.fromkeys(names))
    return kinds


def _parse_default_role(value: Any, roles: Mapping[str, GrantSet]) -> str | None:
    """default_role: the role a partner created with neither roles nor grants gets."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in roles:
        defined = ", ".join(sorted(roles)) or "none"
        raise PolicyError(f"default_role must name a role the policy defines (defined: {defined}), "
                          f"not {excerpt(str(value))}", field="default_role")
    return value


def _parse_token_user_claim(value: Any, operations: Mapping[str, Operation]) -> str | None:
    """token_user_claim: the claim naming the user a token acts for. Operations may demand a
    token_user only when it is set."""
    if value is not None and (not isinstance(value, str) or not value.strip() or not value.isprintable()
                              or len(value) > MAX_CLAIM_NAME_LENGTH):
        raise PolicyError("token_user_claim must be the name of a token claim, e.g. sub", field="token_user_claim")
    if value is None:
        for name, operation in operations.items():
            if operation.token_user is not None:
                raise PolicyError(f"operations.{name}.token_user needs the top-level token_user_claim "
                                  "(the claim naming the user a token acts for)", field=f"operations.{name}.token_user")
    return value


def _parse_sidecar(value: Any) -> bool:
    spec = _mapping(value, "sidecar", required=False)
    if set(spec) - {"strip_credential_headers", API_KEY_QUERY_PARAMETER}:
        raise PolicyError(f"sidecar may only have strip_credential_headers and {API_KEY_QUERY_PARAMETER}",
                          field="sidecar")
    strip = spec.get("strip_credential_headers", False)
    if not isinstance(strip, bool):
        raise PolicyError("sidecar.strip_credential_headers must be true or false",
                          field="sidecar.strip_credential_headers")
    return strip


def _sidecar_api_key_parameter(value: Any) -> str:
    """sidecar.api_key_query_parameter: the query parameter that carries an API key on every route
    that does not say otherwise (ext_authz only; off when absent). URLs end up in browser
    histories and in proxy and server logs, so this is for clients that cannot send headers."""
    spec = _mapping(value, "sidecar", required=False)
    return parse_api_key_query_parameter(spec.get(API_KEY_QUERY_PARAMETER, ""), f"sidecar.{API_KEY_QUERY_PARAMETER}")


def _mapping(value: Any, path: str, *, required: bool = True) -> Mapping[str, Any]:
    if not value and not required:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise PolicyError(f"{path} must be a non-empty mapping", field=path)
    for key in value:
        if not isinstance(key, str) or not _NAME.match(key):
            raise PolicyError(f"{path}: {key!r} is not a valid name", field=f"{path}.{key}")
    return value


def _string_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{path} must be a list of strings", field=path)
    return value


def _parse_scopes(value: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    for scope, spec in _mapping(value, "scopes").items():
        spec = spec or {}
        if not isinstance(spec, Mapping) or set(spec) - {"description", "aliases"}:
            raise PolicyError(f"scopes.{scope} may only have description and aliases", field=f"scopes.{scope}")
        for name in [scope, *_string_list(spec.get("aliases"), f"scopes.{scope}.aliases")]:
            if name in names or name.lower() in LEVEL_WORDS or name.lower() == ADMIN_GRANT:
                raise PolicyError(f"scope name {name!r} is reserved or declared twice", field=f"scopes.{scope}")
            names[name] = scope
    return names


def _parse_roles(value: Any, draft: Policy) -> dict[str, GrantSet]:
    roles: dict[str, GrantSet] = {}
    for role, spec in _mapping(value, "roles", required=False).items():
        path = f"roles.{role}"
        if not isinstance(spec, Mapping) or set(spec) - {"description", "grants"}:
            raise PolicyError(f"{path} must be a mapping with grants", field=path)
        grants = _string_list(spec.get("grants"), f"{path}.grants")
        for index, text in enumerate(grants):
            try:
                roles[role] = draft.grants_from([text], [], strict=True).union(roles.get(role, GrantSet()))
            except ValueError as error:
                raise PolicyError(f"{path}.grants[{index}]: {error}", field=f"{path}.grants[{index}]") from None
        roles.setdefault(role, GrantSet())
    return roles


_OPERATION_KEYS = {"description", "public", "permissions", "relation", "customer", "token_user"}


def _parse_operations(value: Any, draft: Policy) -> dict[str, Operation]:
    operations = {}
    for name, spec in _mapping(value, "operations").items():
        path = f"operations.{name}"
        spec = spec or {}
        if not isinstance(spec, Mapping) or set(spec) - _OPERATION_KEYS:
            extra = sorted(set(spec) - _OPERATION_KEYS)[0] if isinstance(spec, Mapping) else ""
            raise PolicyError(f"{path}: unknown key {extra!r}", field=f"{path}.{extra}")
        operations[name] = _parse_operation(name, spec, path, draft)
    return operations


def _parse_operation(name: str, spec: Mapping[str, Any], path: str, draft: Policy) -> Operation:
    public = spec.get("public", False)
    customer = spec.get("customer", False)
    for key, flag in (("public", public), ("customer", customer)):
        if not isinstance(flag, bool):
            raise PolicyError(f"{path}.{key} must be true or false", field=f"{path}.{key}")
    permissions = []
    for index, text in enumerate(_string_list(spec.get("permissions"), f"{path}.permissions")):
        try:
            permissions.append(draft.parse_permission(text))
        except ValueError as error:
            raise PolicyError(f"{path}.permissions[{index}]: {error}", field=f"{path}.permissions[{index}]") from None
    relation = spec.get("relation")
    relation_names = [relation] if isinstance(relation, str) else _string_list(relation, f"{path}.relation")
    try:
        relations = frozenset(SubjectType(r) for r in relation_names)
    except ValueError:
        raise PolicyError(f"{path}.relation must be user and/or organization", field=f"{path}.relation") from None
    token_user = _parse_token_user(spec.get("token_user"), relations, path)
    if public and (permissions or relations or customer or token_user):
        raise PolicyError(f"{path}: a public operation cannot require anything", field=f"{path}.public")
    return Operation(name, public, tuple(permissions), relations, customer, token_user)


def _parse_token_user(value: Any, relations: frozenset[SubjectType], path: str) -> TokenUser | None:
    if value is None:
        return None
    try:
        token_user = TokenUser(value)
    except ValueError:
        raise PolicyError(f"{path}.token_user must be self or related", field=f"{path}.token_user") from None
    if token_user is TokenUser.SELF and SubjectType.USER not in relations:
        raise PolicyError(f"{path}.token_user: self compares the token's user with the request's user, and the "
                          "operation has no user resource (relation: user)", field=f"{path}.token_user")
    return token_user
