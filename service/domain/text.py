"""Quoting request text back to the caller without letting the caller size the answer."""

import re

EXCERPT_LENGTH = 64
# What RFC 6749 section 5.2 (error_description) and RFC 6750 section 3 (quoted attribute values)
# allow: %x20-21 / %x23-5B / %x5D-7E.
_NOT_QUOTABLE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def excerpt(text: str, limit: int = EXCERPT_LENGTH) -> str:
    """repr() of at most `limit` characters of `text`, marked when cut."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def quotable(text: str) -> str:
    """`text` without the characters an OAuth error description or header attribute may not hold."""
    return _NOT_QUOTABLE.sub("", text)
