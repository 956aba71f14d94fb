"""Parsing of command-line values: durations, files and secrets."""

from __future__ import annotations

import argparse
import os
import re
from datetime import timedelta
from pathlib import Path

from .output import CommandFailed

_DURATION = re.compile(r"^(?:\d+[wdhms])+$")
_PART = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
MAX_DURATION = timedelta(days=3650)
DEFAULT_TARGET = "127.0.0.1:50051"


def default_target() -> str:
    """Where `tollgate client` connects unless --target is given."""
    return os.environ.get("TOLLGATE_TARGET") or DEFAULT_TARGET


def duration(text: str) -> timedelta:
    """"30d", "12h", "15m", "90s", "1w" or combinations ("1h30m"); an argparse type."""
    value = text.strip().lower()
    if not _DURATION.match(value):
        raise argparse.ArgumentTypeError(f"malformed duration {text!r}: use e.g. 30d, 12h, 15m or 1h30m")
    try:
        total = sum((timedelta(**{_UNITS[unit]: int(n)}) for n, unit in _PART.findall(value)), timedelta())
    except OverflowError:
        total = MAX_DURATION * 2
    if total <= timedelta(0) or total > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be positive and at most 3650d")
    return total


def read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CommandFailed(f"cannot read the {what} {path}: {_why(error)}") from None


def read_secret_file(path: str) -> bytes:
    """The file's bytes, without one trailing newline (as `echo secret > file` leaves it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CommandFailed(f"cannot read the HMAC secret file {path}: {_why(error)}") from None
    return data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data


def read_secret_env(name: str) -> bytes:
    value = os.environ.get(name, "")
    if not value:
        raise CommandFailed(f"the environment variable {name} is not set or empty")
    return value.encode("utf-8")


def _why(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)
