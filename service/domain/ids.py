"""Identifiers: a short type prefix and 128 random bits, so ids say what they name."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"
