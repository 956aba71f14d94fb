"""The unit of work: one transaction, the repositories bound to it, and the translation of database
failures into the domain's typed errors (no SQLAlchemy exception leaves the store)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from ..domain.errors import Conflict, InvalidRequest, StoreUnavailable
from ..domain.ports import Repositories
from .engine import WRITE_INTENT
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
from .notifications import REVISION_CHANNEL, OwnRevisions
from .repositories import (
    SqlAdminAuditRepository,
    SqlApiKeyRepository,
    SqlConnectTokenRepository,
    SqlIssuerRepository,
    SqlOAuthClientRepository,
    SqlPartnerRepository,
    SqlRefreshTokenRepository,
    SqlRelationRepository,
    SqlRevokedAccessTokenRepository,
    SqlRevokedTokenRepository,
    SqlSigningKeyRepository,
)
from .watchdog import ConnectionWatchdog

UNAVAILABLE_MESSAGE = "the store is unavailable"

# The health probe (ping): the store revision (the fact cache's freshness check) and every table
# Check's facts come from (service/check/caching/fact_cache.py CachedReader), each with all the columns
# the store maps, so a missing table or column fails the probe at once; EXISTS reads one row at most.
_CHECK_TABLES = (PartnerRow, ApiKeyRow, IssuerRow, RevokedTokenRow, RelationRow, OAuthClientRow, RefreshFamilyRow,
                 RevokedAccessTokenRow, SigningKeyRow)
_CHECK_READS_PROBE = select(
    select(StoreRevisionRow.revision).where(StoreRevisionRow.id == 1).scalar_subquery(),
    *(select(*row.__table__.columns).limit(1).exists() for row in _CHECK_TABLES))

_ADVANCE = update(StoreRevisionRow).where(StoreRevisionRow.id == 1).values(revision=StoreRevisionRow.revision + 1)
# PostgreSQL: the same UPDATE, and a NOTIFY of the new revision in the same statement (one round
# trip), which answers the new revision. NOTIFY is transactional: it is delivered to the listening
# replicas when, and only if, the transaction commits (service/store/notifications.py).
_ADVANCED = _ADVANCE.returning(StoreRevisionRow.revision).cte("advanced")
_ADVANCE_AND_NOTIFY = select(_ADVANCED.c.revision, func.pg_notify(REVISION_CHANNEL, cast(_ADVANCED.c.revision, Text)))


class SqlUnitOfWork:
    """Implements service.domain.ports.UnitOfWork on a SQLAlchemy sessionmaker. With `notify`
    (PostgreSQL), advancing the revision also notifies the replicas, and the revisions this
    process wrote are remembered (wrote()) so that its own listener can pass over their echo."""

    def __init__(self, session_factory: sessionmaker[Session], watchdog: ConnectionWatchdog | None = None, *,
                 notify: bool = False) -> None:
        self._session_factory = session_factory
        self._own_revisions = OwnRevisions() if notify else None
        # Connections checked out inside a unit of work are cut if they hang (PostgreSQL).
        self._watched: Callable[[], AbstractContextManager[None]] = watchdog.watching if watchdog else nullcontext
        self._write_listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()

    @contextmanager
    def __call__(self, *, read_only: bool = False, changes_facts: bool = True) -> Iterator[Repositories]:
        """Commits when the block ends normally, rolls back on any exception. A writing unit of
        work that changes facts advances the store revision in the same transaction, then tells
        the listeners."""
        advances = not read_only and changes_facts
        written: int | None = None
        try:
            with translated_errors(), self._watched(), self._session_factory.begin() as session:
                # Connect now, so an outage surfaces on entry; a writer takes SQLite's write lock here.
                session.connection(execution_options={WRITE_INTENT: not read_only})
                yield repositories(session)
                if advances:
                    # Last statement before COMMIT: the row lock is held only for the commit itself.
                    written = self._advance(session)
        except BaseException:
            if written is not None and self._own_revisions is not None:
                self._own_revisions.discard(written)  # not committed: another writer may take the number
            raise
        if advances:
            for listener in tuple(self._write_listeners):
                listener()

    def _advance(self, session: Session) -> int | None:
        """Advances the revision; on PostgreSQL also notifies, and returns the new revision,
        remembered as this process's own before COMMIT (its notification can reach this process's
        listener before the committing thread runs again)."""
        if self._own_revisions is None:
            session.execute(_ADVANCE)
            return None
        written = session.execute(_ADVANCE_AND_NOTIFY).scalar()
        if written is not None:
            self._own_revisions.add(written)
        return written

    def wrote(self, revision: int) -> bool:
        """Whether this process's own writes advanced the store to `revision` (recently)."""
        return self._own_revisions is not None and revision in self._own_revisions

    def revision(self) -> int:
        with translated_errors(), self._watched(), self._session_factory() as session:
            return session.execute(select(StoreRevisionRow.revision).where(StoreRevisionRow.id == 1)).scalar_one()

    def on_write(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._write_listeners.append(listener)

    def ping(self) -> None:
        """Reads what Check reads, one row of each table at most, in one statement: a store that
        takes connections but cannot answer those reads (a table missing, renamed, unreadable)
        fails the probe as it fails Check."""
        with translated_errors(), self._watched(), self._session_factory() as session:
            if session.execute(_CHECK_READS_PROBE).scalar() is None:  # the store revision row
                raise StoreUnavailable(UNAVAILABLE_MESSAGE)


def repositories(session: Session) -> Repositories:
    return Repositories(
        partners=SqlPartnerRepository(session),
        api_keys=SqlApiKeyRepository(session),
        issuers=SqlIssuerRepository(session),
        revoked_tokens=SqlRevokedTokenRepository(session),
        relations=SqlRelationRepository(session),
        connect_tokens=SqlConnectTokenRepository(session),
        audit=SqlAdminAuditRepository(session),
        oauth_clients=SqlOAuthClientRepository(session),
        refresh_tokens=SqlRefreshTokenRepository(session),
        revoked_access_tokens=SqlRevokedAccessTokenRepository(session),
        signing_keys=SqlSigningKeyRepository(session),
    )


@contextmanager
def translated_errors() -> Iterator[None]:
    """SQLAlchemy errors become domain errors, mostly StoreUnavailable, with the original chained
    but never in the message (driver text can name hosts). Domain errors pass through unchanged."""
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        raise _translated(error) from error


def _translated(error: sa_exc.SQLAlchemyError) -> Exception:
    if isinstance(error, sa_exc.IntegrityError):
        # A constraint the repositories did not expect to hit (they map the expected ones).
        return Conflict("the change conflicts with the stored data", reason="conflict")
    if isinstance(error, sa_exc.DataError):
        # The database refused a value (e.g. a NUL character on PostgreSQL): the request's fault.
        return InvalidRequest("a value cannot be stored: it has characters the database refuses")
    if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DBAPIError) \
            and isinstance(error.orig, Exception):
        # Our own bug caught while binding a value (e.g. a naive datetime): not an outage.
        return error.orig
    # OperationalError, InterfaceError, pool TimeoutError, a DBAPIError with connection_invalidated,
    # and a missing or broken schema: all leave the store unusable, so decisions fail closed.
    return StoreUnavailable(UNAVAILABLE_MESSAGE)
