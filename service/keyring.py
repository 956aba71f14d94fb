"""The key-encryption key that seals HMAC issuer secrets at rest."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import Settings
from .tokens import new_key_encryption_key

log = logging.getLogger("tollgate.keyring")


def load_key_encryption_key(settings: Settings) -> str:
    """The configured key, else data_dir/secret.key, created (mode 0600) on first use.
    Replicas sharing one database must share this key (set TOLLGATE_KEY_ENCRYPTION_KEY)."""
    if settings.key_encryption_key:
        return settings.key_encryption_key
    path = Path(settings.data_dir) / "secret.key"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key_encryption_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key)
    log.info("created a new key-encryption key in %s", path)
    return key
