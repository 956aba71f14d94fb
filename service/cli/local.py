"""Wiring for the commands that work on the local store: settings, policy, store and use cases."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings
from ..domain.errors import DomainError
from ..domain.model import SigningKeyRecord
from ..domain.ports import SystemClock
from ..usecases.admin import AdminService, SigningKeySettings
from ..usecases.relations import RelationService, RelationSettings
from .output import CommandFailed

if TYPE_CHECKING:  # the store is imported when a command opens it (start-up time)
    from ..store import Store


def settings_from(args: argparse.Namespace, **overrides: object) -> Settings:
    """TOLLGATE_* environment variables, overridden by the global options and `overrides`."""
    data_dir = getattr(args, "data_dir", None)
    policy = getattr(args, "policy", None)
    return load_settings(
        None,
        database_url=getattr(args, "database_url", None),
        data_dir=Path(data_dir) if data_dir else None,
        policy_path=Path(policy) if policy else None,
        **overrides,
    )


@dataclass
class Local:
    settings: Settings
    store: Store

    @property
    def unit_of_work(self):
        return self.store.unit_of_work

    def admin(self) -> AdminService:
        from ..policy_file import load_policy

        policy = load_policy(self.settings.policy_path)
        settings = self.settings
        signing = SigningKeySettings(settings.token_signing_algorithm, timedelta(
            seconds=settings.access_token_lifetime_seconds + settings.jwt_leeway_seconds))
        from ..server import remote_key_service

        remote_keys = step("prepare fetching issuers' keys",
                           lambda: remote_key_service(settings, self.unit_of_work, SystemClock()))
        return AdminService(lambda: policy, self.unit_of_work, SystemClock(), signer=_SignerOnFirstUse(settings),
                            signing=signing, remote_keys=remote_keys)

    def relations(self) -> RelationService:
        return RelationService(self.unit_of_work, SystemClock(), RelationSettings(
            pending_ttl=timedelta(seconds=self.settings.pending_relation_ttl_seconds),
            connect_token_ttl=timedelta(seconds=self.settings.connect_token_ttl_seconds)))


class _SignerOnFirstUse:
    """domain.ports.TokenSigner: a KeySigner on the key-encryption key, loaded when a key is first
    made or used. Most commands never need it, and loading it creates data_dir/secret.key when
    none is configured, which only a command that seals something should do."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signer: Any = None

    def _loaded(self):
        if self._signer is None:
            from ..keyring import load_key_encryption_key
            from ..tokens.signing import KeySigner

            self._signer = step("load the key-encryption key",
                                lambda: KeySigner(load_key_encryption_key(self._settings)))
        return self._signer

    def new_key(self, algorithm: str, now: datetime) -> SigningKeyRecord:
        return self._loaded().new_key(algorithm, now)

    def sign(self, claims: dict, key: SigningKeyRecord) -> str:
        return self._loaded().sign(claims, key)


@contextmanager
def local(args: argparse.Namespace) -> Iterator[Local]:
    """Opens the store (creating or upgrading its schema first) and disposes of it afterwards."""
    settings = settings_from(args)
    store = open_store(settings)
    try:
        step("migrate the store", store.migrate)
        yield Local(settings, store)
    finally:
        store.dispose()


def open_store(settings: Settings):
    from ..store import create_store

    return step("open the store", lambda: create_store(
        settings.effective_database_url, pool_size=min(settings.db_pool_size, 2),
        pool_timeout=settings.db_pool_timeout_seconds, connect_timeout=settings.db_connect_timeout_seconds))


def step(what: str, action):
    try:
        return action()
    except DomainError as error:
        raise CommandFailed(f"cannot {what}: {error.message}", reason=error.reason) from None
    except Exception as error:  # noqa: BLE001  (driver errors: reported, never a stack trace)
        raise CommandFailed(f"cannot {what}: {type(error).__name__}: {error}") from None
