"""Output: one JSON document on stdout (--json), or compact aligned text; errors and warnings on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

# A column of a table or a line of a record: (label shown to humans, key in the data).
Column = tuple[str, str]


class CommandFailed(Exception):
    """A command could not be carried out: `error: <message>` on stderr, exit code 2 (1 for RPCs)."""

    def __init__(self, message: str, *, exit_code: int = 2, **details: str) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = {k: v for k, v in details.items() if v}


@dataclass
class Output:
    as_json: bool = False
    stdout: TextIO = sys.stdout
    stderr: TextIO = sys.stderr

    def record(self, data: Mapping[str, Any], lines: Sequence[Column] | None = None) -> None:
        """One object: as JSON, or as aligned `label  value` lines (all keys when `lines` is None)."""
        if self.as_json:
            return self._json(data)
        lines = lines or [(key, key) for key in data]
        width = max(len(label) for label, _ in lines)
        for label, key in lines:
            self._line(f"{label:<{width}}  {human(data.get(key))}")

    def table(self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
              extra: Mapping[str, Any] | None = None) -> None:
        """A list: as JSON {name: [...], **extra}, or as an aligned table with a header."""
        if self.as_json:
            return self._json({name: list(rows), **(extra or {})})
        if not rows:
            self._line(f"(no {name})")
        else:
            cells = [[label.upper() for label, _ in columns]]
            cells += [[human(row.get(key)) for _, key in columns] for row in rows]
            widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
            for line in cells:
                self._line("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        for key, value in (extra or {}).items():
            if value:
                self._line(f"{key}: {human(value)}")

    def document(self, data: Any) -> None:
        """JSON in either mode, for data that has no flatter form (e.g. a message of any type)."""
        self._json(data)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stderr, flush=True)

    def error(self, message: str, details: Mapping[str, str] | None = None) -> None:
        print(f"error: {message}", file=self.stderr, flush=True)
        if self.as_json:
            self._json({"error": {"message": message, **(details or {})}})

    def _json(self, document: Any) -> None:
        print(json.dumps(document, indent=2, ensure_ascii=False), file=self.stdout, flush=True)

    def _line(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)


def human(value: Any) -> str:
    if value is None or value == "" or value == [] or value == ():
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(human(v) for v in value)
    if isinstance(value, Mapping):
        return " ".join(f"{k}={human(v)}" for k, v in value.items())
    return str(value)
