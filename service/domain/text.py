"""Quoting request text back to the caller without letting the caller size the answer."""

EXCERPT_LENGTH = 64


def excerpt(text: str, limit: int = EXCERPT_LENGTH) -> str:
    """repr() of at most `limit` characters of `text`, marked when cut."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")
