"""Reads the policy YAML file; errors name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import yaml

from .domain.errors import PolicyError
from .domain.policy import Policy, parse_policy


def load_policy(path: Path) -> Policy:
    """Raises PolicyError with a message that names the file and the line or key at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the policy file ({error.strerror})", field=str(path)) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise PolicyError(f"{path}: {where}: {problem}", field=where) from None
    try:
        return parse_policy(document)
    except PolicyError as error:
        line = _line_of(text, error.field)
        where = f"line {line}, " if line else ""
        raise PolicyError(f"{path}: {where}{error.message}", field=error.field) from None


def _line_of(text: str, key_path: str) -> int | None:
    """The line of the innermost mapping key along a dotted key path, found in the YAML node tree."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in key_path.replace("]", "").replace("[", ".").split("."):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
