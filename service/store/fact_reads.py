"""The facts Check, credential verification and the token grants read (domain.ports.Facts), read
in one read-only transaction on the database driver's own cursor.

These reads run on every check the fact cache does not answer (and on every check with the cache
off), so they skip what the ORM and SQLAlchemy's statement execution add for nothing here: a
Session per unit of work, building each statement anew, execution contexts, events and result
objects, which cost several times the read itself. Each statement is written once, below, with
SQLAlchemy Core and compiled once per database (its SQL text and parameter order), with
SQLAlchemy's own type processing for its parameters and columns (times, JSON), so the values are
exactly what the ORM reads; a read is one execute on the driver's cursor. The connection comes
from the engine's pool, with its events (PostgreSQL's watchdog); the reading's first statement
checks that it is alive (SqlFactReads._opened). The records
are made by the same functions as the repositories' (records.py), so both read paths give equal
records (tests/store/test_fact_reads.py runs both on SQLite and PostgreSQL).
"""

from __future__ import annotations

import builtins
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, Engine, Select, bindparam, exists, literal_column, or_, select, true

from ..domain.errors import StoreUnavailable
from ..domain.model import (
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    RefreshFamilyRecord,
    RelationRecord,
    RelationStatus,
    SigningKeyRecord,
    SubjectType,
)
from ..domain.ports import FactSnapshot, ReadAgain
from .engine import checked_by_first_statement
from .models import (
    ApiKeyRow,
    IssuerRow,
    OAuthClientRow,
    PartnerRow,
    RefreshFamilyRow,
    RelationRow,
    RevokedAccessTokenRow,
    RevokedTokenRow,
    SigningKeyRow,
    StoreRevisionRow,
)
from .records import (
    api_key_record,
    issuer_record,
    oauth_client_record,
    partner_record,
    refresh_family_record,
    relation_record,
    signing_key_record,
    storable,
)
from .repositories import OPEN_STATUSES
from .unit_of_work import UNAVAILABLE_MESSAGE, translated_errors

_partners = PartnerRow.__table__.c
_api_keys = ApiKeyRow.__table__.c
_issuers = IssuerRow.__table__.c
_revoked = RevokedTokenRow.__table__.c
_relations = RelationRow.__table__.c
_clients = OAuthClientRow.__table__.c
_families = RefreshFamilyRow.__table__.c
_revoked_access = RevokedAccessTokenRow.__table__.c
_signing = SigningKeyRow.__table__.c

_PARTNER = select(PartnerRow.__table__).where(_partners.id == bindparam("id"))
_API_KEY_BY_DIGEST = select(ApiKeyRow.__table__).where(_api_keys.digest == bindparam("digest"))
_ISSUER_BY_ISS = select(IssuerRow.__table__).where(_issuers.issuer == bindparam("issuer"))
_TOKEN_REVOKED = select(exists().where(_revoked.issuer_id == bindparam("issuer_id"), _revoked.jti == bindparam("jti")))
_TRIPLE = (_relations.partner_id == bindparam("partner_id"), _relations.subject_type == bindparam("subject_type"),
           _relations.subject_id == bindparam("subject_id"))
# The open statuses as SQL literals (they are ours): an IN list of bound values would be expanded
# per execution, which a statement compiled once cannot be.
_OPEN_RELATION = select(RelationRow.__table__).where(
    *_TRIPLE, _relations.status.in_([literal_column(f"'{status}'") for status in OPEN_STATUSES]))
# One EXISTS over ix_relations_triple, asked on every relation-bound check.
_RELATION_ACTIVE = select(exists().where(
    *_TRIPLE, _relations.status == RelationStatus.ACTIVE.value,
    or_(_relations.expires_at.is_(None), _relations.expires_at > bindparam("now"))))
_CLIENT = select(OAuthClientRow.__table__).where(_clients.id == bindparam("id"))
_FAMILY = select(RefreshFamilyRow.__table__).where(_families.id == bindparam("id"))
_ACCESS_TOKEN_REVOKED = select(exists().where(_revoked_access.jti == bindparam("jti")))
_ACTIVE_SIGNING_KEY = select(SigningKeyRow.__table__).where(_signing.active.is_(True))
_PUBLISHED_SIGNING_KEYS = (select(SigningKeyRow.__table__)
                           .where(or_(_signing.publish_until.is_(None), _signing.publish_until > bindparam("now")))
                           .order_by(_signing.created_at.desc(), _signing.kid))
_REVISION = select(StoreRevisionRow.__table__.c.revision).where(StoreRevisionRow.__table__.c.id == 1)
_REVOKED_TOKEN_IDS = select(_revoked.issuer_id, _revoked.jti)
_REVOKED_ACCESS_TOKEN_IDS = select(_revoked_access.jti)
_SIGNING_KEYS = select(SigningKeyRow.__table__).order_by(_signing.created_at.desc(), _signing.kid)

_STATEMENTS = (_PARTNER, _API_KEY_BY_DIGEST, _ISSUER_BY_ISS, _TOKEN_REVOKED, _OPEN_RELATION, _RELATION_ACTIVE,
               _CLIENT, _FAMILY, _ACCESS_TOKEN_REVOKED, _ACTIVE_SIGNING_KEY, _PUBLISHED_SIGNING_KEYS, _REVISION,
               _REVOKED_TOKEN_IDS, _REVOKED_ACCESS_TOKEN_IDS, _SIGNING_KEYS)


def _stamped(statement: Select[Any]) -> Select[Any]:
    """`statement` with the store revision before its columns, in one statement, so that what it
    reads comes with the revision it was read at: the revision row left-joined to the statement's
    rows, one row (the statement's columns NULL) when it has none. Outside a transaction each
    statement sees the store as of its own start; one that sees the revision the reading answers
    from saw the same facts (every committed change of facts moves the revision)."""
    revision = StoreRevisionRow.__table__
    rows = statement.subquery()
    stamped = (select(revision.c.revision, *rows.c).select_from(revision.outerjoin(rows, true()))
               .where(revision.c.id == 1))
    order = [rows.c[column.name].desc() if descending else rows.c[column.name]
             for column, descending in _ORDER.get(statement, ())]
    return stamped.order_by(*order)


# The order of the statements whose rows are ordered, again over their stamped form (the order of
# a subquery's rows is not the order of a query over it).
_ORDER = {_PUBLISHED_SIGNING_KEYS: ((_signing.created_at, True), (_signing.kid, False)),
          _SIGNING_KEYS: ((_signing.created_at, True), (_signing.kid, False))}
# Every statement but the revision's own, stamped: the statements of an optimistic reading.
_STAMPED = {statement: _stamped(statement) for statement in _STATEMENTS if statement is not _REVISION}


class _Compiled:
    """One statement compiled for one database: its SQL text, how to bind its parameters (in the
    driver's parameter style, each through its type's processor) and how to read its rows."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        fixed = compiled.construct_params(_check=False)  # the statement's own values (e.g. id = 1)
        binds = {name: bind for name, bind in compiled.binds.items() if name in fixed}
        self._names: tuple[str, ...] = (tuple(compiled.positiontup) if compiled.positional and compiled.positiontup
                                        else tuple(fixed))
        if len(set(self._names)) != len(self._names):  # parameters() binds each name once
            raise ValueError(f"a parameter is used twice in {self.sql!r}: give each use its own name")
        self._positional = compiled.positional
        self._fixed = fixed
        self._bind = {name: processor for name in self._names
                      if (processor := binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None}
        columns = list(statement.selected_columns)
        self._read = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self._plain = not any(self._read)
        # Rows read by column name, as records.py reads the ORM's (the names are known only here).
        names = [str(column.key) for column in columns]
        self._row: Any = namedtuple("_Row", names, rename=True)  # type: ignore[misc]  # a type made at run time

    def parameters(self, given: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The values in the driver's style: in order for a positional one, by name otherwise."""
        values = {}
        for name in self._names:
            value = given[name] if name in given else self._fixed[name]
            processor = self._bind.get(name)
            values[name] = processor(value) if processor is not None else value
        return tuple(values.values()) if self._positional else values

    def rows(self, fetched: list[tuple[Any, ...]]) -> list[Any]:
        make = self._row._make
        if self._plain:
            return [make(row) for row in fetched]
        read = self._read
        return [make(value if processor is None else processor(value)
                     for value, processor in zip(row, read, strict=True)) for row in fetched]


class _Cursor:
    """One reading's cursor: runs a statement of this module and gives its rows."""

    __slots__ = ("_compiled", "_cursor")

    def __init__(self, cursor: Any, compiled: dict[Select[Any], _Compiled]) -> None:
        self._cursor = cursor
        self._compiled = compiled

    def rows(self, statement: Select[Any], parameters: dict[str, Any] | None = None) -> list[Any]:
        compiled = self._compiled[statement]
        return compiled.rows(self._fetched(compiled, parameters))

    def _fetched(self, compiled: _Compiled, parameters: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        """The driver's rows of `compiled`, run with `parameters`."""
        cursor = self._cursor
        cursor.execute(compiled.sql, compiled.parameters(parameters or {}))
        return cursor.fetchall()

    def execute_only(self, sql: str) -> None:
        self._cursor.execute(sql)

    def first(self, statement: Select[Any], parameters: dict[str, Any] | None = None) -> Any:
        rows = self.rows(statement, parameters)
        return rows[0] if rows else None

    def scalar(self, statement: Select[Any], parameters: dict[str, Any] | None = None) -> Any:
        rows = self.rows(statement, parameters)
        return rows[0][0] if rows else None


class _StampedCursor(_Cursor):
    """An optimistic reading's cursor: runs each statement stamped (see _stamped), with no
    transaction around them, and raises ReadAgain when one saw another revision than `revision`."""

    __slots__ = ("_revision", "_stamped", "confirmed")

    def __init__(self, cursor: Any, compiled: dict[Select[Any], _Compiled], stamped: dict[Select[Any], _Compiled],
                 revision: int) -> None:
        super().__init__(cursor, compiled)
        self._stamped = stamped
        self._revision = revision
        self.confirmed = False  # whether a statement has seen `revision`

    def restart(self, revision: int) -> None:
        """Ready for another reading, of `revision` (a thread's own cursor, see _ThreadReading)."""
        self._revision = revision
        self.confirmed = False

    def rows(self, statement: Select[Any], parameters: dict[str, Any] | None = None) -> list[Any]:
        fetched = self._fetched(self._stamped[statement], parameters)
        self._confirm(fetched[0][0] if fetched else None)
        # The first column of every statement here is never NULL (a key, or EXISTS): NULL is no row.
        return self._compiled[statement].rows([row[1:] for row in fetched if row[1] is not None])

    def confirm(self) -> None:
        """Reads the revision when no statement has: a reading answered from memory alone."""
        if not self.confirmed:
            rows = _Cursor.rows(self, _REVISION)  # the plain statement: it reads the revision itself
            self._confirm(rows[0][0] if rows else None)

    def _confirm(self, revision: int | None) -> None:
        if revision != self._revision:
            raise ReadAgain(revision if revision is not None else -1)
        self.confirmed = True


class _ThreadReading:
    """A handler thread's own SQLite connection for its optimistic readings, with its cursor and
    facts, made once: a reading then costs no pool checkout and checkin and no new objects."""

    __slots__ = ("busy", "connection", "cursor", "facts")

    def __init__(self, connection: Any, cursor: _StampedCursor) -> None:
        self.connection = connection
        self.cursor = cursor
        self.facts = SqlFacts(cursor, -1)
        self.busy = False


class SqlFactReads:
    """Opens readings of the facts: `with fact_reads() as facts: ...`, one read-only transaction;
    or `with fact_reads.at_revision(r) as facts: ...`, an optimistic reading of revision r.
    `close()` closes the connections it holds outside the pool."""

    def __init__(self, engine: Engine, watched: Callable[[], AbstractContextManager[None]]) -> None:
        self._engine = engine
        self._watched = watched
        dialect = engine.dialect
        self._compiled = {statement: _Compiled(statement, dialect) for statement in _STATEMENTS}
        self._stamped = {statement: _Compiled(stamped, dialect) for statement, stamped in _STAMPED.items()}
        self._driver_error = dialect.loaded_dbapi.Error
        # SQLite's driver runs without a transaction of its own (engine.py): the reading begins one.
        self._begin = dialect.name == "sqlite"
        # psycopg begins one with a connection's first statement unless told not to (autocommit).
        self._autocommit = dialect.name == "postgresql"
        # On SQLite each handler thread keeps a connection of its own for optimistic readings, taken
        # out of the pool (detached: the pool may open another in its place). A file database has
        # no server to count connections; PostgreSQL's stay within the pool's bound.
        self._per_thread = dialect.name == "sqlite"
        self._threads = threading.local()
        self._held: list[_ThreadReading] = []
        self._held_lock = threading.Lock()

    def close(self) -> None:
        """Closes the threads' own connections (SQLite); a thread reading again opens a new one."""
        with self._held_lock:
            held, self._held = self._held, []
            self._threads = threading.local()
        for reading in held:
            reading.connection.close()

    @contextmanager
    def at_revision(self, revision: int) -> Iterator[FactSnapshot]:
        """An optimistic reading: its facts as of store revision `revision`, read with no
        transaction, each statement on its own with the revision it saw (one statement for most
        facts, where a transaction takes three more: BEGIN, the revision, COMMIT). Raises ReadAgain
        when a statement saw another revision, or when the reading read nothing and the revision
        has moved on since; and when its connection has died: a reading writes nothing, so reading
        again is always safe. StoreUnavailable when the store cannot be reached."""
        if self._per_thread:
            reading = getattr(self._threads, "reading", None) or self._thread_reading()
            if not reading.busy:  # not a reading nested in another on this thread
                yield from self._read_on(reading, revision)
                return
        try:
            with translated_errors(), self._watched(), checked_by_first_statement():
                connection = self._engine.raw_connection()
        except self._driver_error as error:  # the driver's, connecting
            raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
        dbapi_connection: Any = connection.dbapi_connection  # the driver's own (psycopg's autocommit)
        try:
            if self._autocommit:
                dbapi_connection.autocommit = True  # set back below, before the pool has it again
            cursor = _StampedCursor(connection.cursor(), self._compiled, self._stamped, revision)
            yield SqlFacts(cursor, revision)
            cursor.confirm()
        except self._driver_error as error:
            if self._engine.dialect.is_disconnect(error, dbapi_connection, None):
                connection.invalidate(error)  # the pool opens a new one for the next reading
                raise ReadAgain(-1) from error
            raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
        finally:
            if self._autocommit and connection.is_valid:
                dbapi_connection.autocommit = False
            connection.close()

    def _read_on(self, reading: _ThreadReading, revision: int) -> Iterator[FactSnapshot]:
        reading.cursor.restart(revision)
        reading.facts._revision = revision
        reading.busy = True
        try:
            yield reading.facts
            reading.cursor.confirm()
        except self._driver_error as error:
            raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
        finally:
            reading.busy = False

    def _thread_reading(self) -> _ThreadReading:
        try:
            with translated_errors():
                connection = self._engine.raw_connection()
        except self._driver_error as error:
            raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
        connection.detach()  # this thread's from now on; closing it closes the driver's connection
        reading = _ThreadReading(connection, _StampedCursor(connection.cursor(), self._compiled, self._stamped, -1))
        with self._held_lock:
            self._held.append(reading)
            self._threads.reading = reading
        return reading

    @contextmanager
    def __call__(self, optimistic: bool = False) -> Iterator[FactSnapshot]:
        """Raises StoreUnavailable when the store cannot be reached (on entry, or on any read).
        Always consistent: with nothing kept in memory there is nothing to be optimistic about."""
        connection, cursor, revision = self._opened()
        try:
            yield SqlFacts(cursor, revision)
            connection.commit()  # a read: ends the transaction, writes nothing
        except self._driver_error as error:
            if self._engine.dialect.is_disconnect(error, connection.dbapi_connection, None):
                connection.invalidate(error)  # the pool opens a new one for the next reading
            raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
        finally:
            connection.close()  # back to the pool, which rolls back whatever is left open

    def _opened(self) -> tuple[Any, _Cursor, int]:
        """A pooled connection in a transaction, and the store revision it reads, the first
        statement. That statement is also the connection's liveness check (no ping before it):
        a connection that died in the pool (a restart, a failover) fails it, and the reading
        starts again once on a new connection."""
        for attempt in (1, 2):
            try:
                with translated_errors(), self._watched(), checked_by_first_statement():
                    connection = self._engine.raw_connection()
            except self._driver_error as error:  # the driver's, connecting
                raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
            try:
                cursor = _Cursor(connection.cursor(), self._compiled)
                if self._begin:
                    cursor.execute_only("BEGIN")
                return connection, cursor, int(cursor.scalar(_REVISION))
            except self._driver_error as error:
                dead = self._engine.dialect.is_disconnect(error, connection.dbapi_connection, None)
                if dead:
                    connection.invalidate(error)
                connection.close()
                if not dead or attempt == 2:
                    raise StoreUnavailable(UNAVAILABLE_MESSAGE) from error
        raise AssertionError("unreachable: the second attempt returns or raises")


class SqlFacts:
    """domain.ports.FactSnapshot on one reading's cursor."""

    def __init__(self, cursor: _Cursor, revision: int) -> None:
        self._execute = execute = cursor
        self._revision = revision
        self.partners = _Partners(execute)
        self.api_keys = _ApiKeys(execute)
        self.issuers = _Issuers(execute)
        self.revoked_tokens = _RevokedTokens(execute)
        self.relations = _Relations(execute)
        self.oauth_clients = _OAuthClients(execute)
        self.refresh_tokens = _RefreshFamilies(execute)
        self.revoked_access_tokens = _RevokedAccessTokens(execute)
        self.signing_keys = _SigningKeys(execute)

    def revision(self) -> int:
        return self._revision

    def revoked_token_ids(self) -> frozenset[tuple[str, str]]:
        return frozenset((issuer_id, jti) for issuer_id, jti in self._execute.rows(_REVOKED_TOKEN_IDS))

    def revoked_access_token_ids(self) -> frozenset[str]:
        return frozenset(row[0] for row in self._execute.rows(_REVOKED_ACCESS_TOKEN_IDS))


class _Reader:
    __slots__ = ("_execute",)

    def __init__(self, cursor: _Cursor) -> None:
        self._execute = cursor


class _Partners(_Reader):
    def get(self, partner_id: str) -> PartnerRecord | None:
        if not storable(partner_id):
            return None
        row = self._execute.first(_PARTNER, {"id": partner_id})
        return partner_record(row) if row is not None else None


class _ApiKeys(_Reader):
    def find_by_digest(self, digest: str) -> ApiKeyRecord | None:
        if not storable(digest):
            return None
        row = self._execute.first(_API_KEY_BY_DIGEST, {"digest": digest})
        return api_key_record(row) if row is not None else None


class _Issuers(_Reader):
    def find_by_issuer(self, issuer: str) -> IssuerRecord | None:
        if not storable(issuer):  # `iss` comes from a token not yet verified
            return None
        row = self._execute.first(_ISSUER_BY_ISS, {"issuer": issuer})
        return issuer_record(row) if row is not None else None


class _RevokedTokens(_Reader):
    def is_revoked(self, issuer_id: str, jti: str) -> bool:
        if not storable(issuer_id, jti):
            return False
        return bool(self._execute.scalar(_TOKEN_REVOKED, {"issuer_id": issuer_id, "jti": jti}))


class _Relations(_Reader):
    def find_open(self, partner_id: str, subject_type: SubjectType, subject_id: str) -> RelationRecord | None:
        if not storable(partner_id, subject_id):
            return None
        row = self._execute.first(_OPEN_RELATION, {"partner_id": partner_id, "subject_type": subject_type.value,
                                             "subject_id": subject_id})
        return relation_record(row) if row is not None else None

    def is_active(self, partner_id: str, subject_type: SubjectType, subject_id: str, now: datetime) -> bool:
        if not storable(partner_id, subject_id):
            return False
        return bool(self._execute.scalar(_RELATION_ACTIVE, {
            "partner_id": partner_id, "subject_type": subject_type.value, "subject_id": subject_id, "now": now}))


class _OAuthClients(_Reader):
    def get(self, client_id: str) -> OAuthClientRecord | None:
        if not storable(client_id):  # a client id comes from an unauthenticated request
            return None
        row = self._execute.first(_CLIENT, {"id": client_id})
        return oauth_client_record(row) if row is not None else None


class _RefreshFamilies(_Reader):
    def get_family(self, family_id: str) -> RefreshFamilyRecord | None:
        if not storable(family_id):
            return None
        row = self._execute.first(_FAMILY, {"id": family_id})
        return refresh_family_record(row) if row is not None else None


class _RevokedAccessTokens(_Reader):
    def is_revoked(self, jti: str) -> bool:
        if not storable(jti):
            return False
        return bool(self._execute.scalar(_ACCESS_TOKEN_REVOKED, {"jti": jti}))


class _SigningKeys(_Reader):
    def active(self) -> SigningKeyRecord | None:
        row = self._execute.first(_ACTIVE_SIGNING_KEY)
        return signing_key_record(row) if row is not None else None

    def published(self, now: datetime) -> list[SigningKeyRecord]:
        return [signing_key_record(row) for row in self._execute.rows(_PUBLISHED_SIGNING_KEYS, {"now": now})]

    def list(self) -> builtins.list[SigningKeyRecord]:
        return [signing_key_record(row) for row in self._execute.rows(_SIGNING_KEYS)]
