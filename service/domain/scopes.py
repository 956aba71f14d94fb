"""Scopes, levels and grant sets.

A grant is (scope, level) with none < read < write; write implies read. The policy declares the
scopes (with OAuth-style aliases); `admin` holds every scope at write.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class AccessLevel(enum.IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


# Spellings accepted for a level; "admin" is kept as a synonym of write ("relations:admin").
LEVEL_WORDS: Mapping[str, AccessLevel] = MappingProxyType(
    {"none": AccessLevel.NONE, "read": AccessLevel.READ, "write": AccessLevel.WRITE, "admin": AccessLevel.WRITE}
)

# The grant string that holds every scope at write.
ADMIN_GRANT = "admin"


@dataclass(frozen=True, order=True)
class Permission:
    """One scope at one level; its canonical text is "scope:level", e.g. "user:read"."""

    scope: str
    level: AccessLevel

    def __str__(self) -> str:
        return f"{self.scope}:{self.level.label}"


@dataclass(frozen=True)
class GrantSet:
    """Effective grants: a level per scope, plus a floor that applies to every scope (admin)."""

    levels: Mapping[str, AccessLevel] = field(default_factory=dict)
    every_scope: AccessLevel = AccessLevel.NONE
    # listed()'s answers, by the known scopes they were asked for: a set is immutable, and sorting
    # its grants costs more than the rest of a decision; one set serves every check of its credential.
    _listings: dict[frozenset[str] | None, tuple[Permission, ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def level_of(self, scope: str) -> AccessLevel:
        return max(self.levels.get(scope, AccessLevel.NONE), self.every_scope)

    def allows(self, permission: Permission) -> bool:
        return self.level_of(permission.scope) >= permission.level

    def union(self, other: GrantSet) -> GrantSet:
        merged = dict(self.levels)
        for scope, level in other.levels.items():
            merged[scope] = max(merged.get(scope, AccessLevel.NONE), level)
        return GrantSet(merged, max(self.every_scope, other.every_scope))

    def capped_by(self, ceiling: GrantSet) -> GrantSet:
        """Never more than `ceiling` on any scope (how a credential is narrowed to its partner)."""
        scopes = set(self.levels) | set(ceiling.levels)
        capped = {s: min(self.level_of(s), ceiling.level_of(s)) for s in scopes}
        return GrantSet(
            {s: lvl for s, lvl in capped.items() if lvl > AccessLevel.NONE},
            min(self.every_scope, ceiling.every_scope),
        )

    def is_within(self, ceiling: GrantSet) -> bool:
        """True when `ceiling` holds every grant of this set, at least at its level."""
        if self.every_scope > ceiling.every_scope:
            return False
        return all(ceiling.level_of(scope) >= level for scope, level in self.levels.items())

    def listed(self, known_scopes: Iterable[str]) -> tuple[Permission, ...]:
        """The grants as a sorted list; an every-scope floor is spelled out over `known_scopes`."""
        key: frozenset[str] | None
        if not self.every_scope:
            key = None  # without a floor the listing does not depend on the known scopes
        elif isinstance(known_scopes, frozenset):
            key = known_scopes
        else:
            return self._listing(known_scopes)
        found = self._listings.get(key)
        if found is None:  # racing threads store equal tuples
            found = self._listings[key] = self._listing(known_scopes)
        return found

    def _listing(self, known_scopes: Iterable[str]) -> tuple[Permission, ...]:
        scopes = set(self.levels) | (set(known_scopes) if self.every_scope else set())
        permissions = (Permission(s, self.level_of(s)) for s in scopes)
        return tuple(sorted(p for p in permissions if p.level > AccessLevel.NONE))


ALL_SCOPES_WRITE = GrantSet({}, AccessLevel.WRITE)
