"""A small Dockerfile parser: enough to check the file's promises and run its commands without a
container engine."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
GRPC_PORT = "50051"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, ENV, ...
    arguments: str  # the rest of the instruction, continuation lines joined
    line: int  # 1-based line of the keyword


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions. Handles comments, blank lines and backslash continuations
    (the escape directive is not supported: the file does not use it)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (also inside a continuation, as Docker does) and blank lines
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append((stripped[:-1] if continued else stripped).strip())
        if not continued:
            keyword, _, arguments = " ".join(part for part in pending if part).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a line continuation"

    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, instruction.line))
        elif instruction.keyword == "ARG" and not stages:
            continue  # global build arguments before the first FROM
        else:
            assert stages, f"line {instruction.line}: {instruction.keyword} before any FROM"
            stages[-1].instructions.append(instruction)
    return stages


def load_stages(path: Path = DOCKERFILE) -> list[Stage]:
    return parse_dockerfile(path.read_text())


def exec_form(instruction: Instruction) -> list[str] | None:
    """The JSON-array (exec) form's words, or None for the shell form."""
    if not instruction.arguments.startswith("["):
        return None
    words = json.loads(instruction.arguments)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), instruction
    return words


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """ENV KEY=VALUE [KEY=VALUE ...]; the legacy `ENV KEY VALUE` form is refused."""
    pairs = []
    for word in shlex.split(instruction.arguments):
        key, equals, value = word.partition("=")
        assert equals, f"line {instruction.line}: use ENV KEY=VALUE, not the legacy form"
        pairs.append((key, value))
    return pairs


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand(value: str, env: Mapping[str, str]) -> str:
    """$NAME and ${NAME} from what is set so far (unset names become empty, as in Docker)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def stage_env(stage: Stage, inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every variable the stage's ENV lines set, in order, expanded against `inherited` (the base
    image's environment, e.g. its PATH) and the earlier ones. Only the ENV-set names are returned."""
    known = dict(inherited or {})
    result: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for key, value in env_pairs(instruction):
            known[key] = result[key] = expand(value, known)
    return result


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """The final HEALTHCHECK's options (--interval=… etc.) and its exec-form command."""
    instruction = stage.last("HEALTHCHECK")
    assert instruction is not None, "the runtime stage has no HEALTHCHECK"
    options: dict[str, str] = {}
    rest = instruction.arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    kind, _, command = rest.partition(" ")
    assert kind.upper() == "CMD", f"HEALTHCHECK {kind}: expected CMD (NONE turns the check off)"
    words = exec_form(Instruction("CMD", command.strip(), instruction.line))
    assert words, "HEALTHCHECK CMD must use the exec (JSON array) form"
    return options, words


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """COPY [--from=… --chown=…] SRC… DEST -> (flags, sources, destination)."""
    words = exec_form(instruction) or shlex.split(instruction.arguments)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words[:-1], words[-1]


