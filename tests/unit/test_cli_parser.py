"""The `tollgate` argument parser as a whole: help on every option, store options only where a
store is used, and usage errors that show the usage of the (sub)command at fault."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from service.cli.parser import UsageError, build_parser

STORE_OPTIONS = {"--database-url", "--data-dir", "--policy"}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("tollgate",)
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree, top-level first, with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return [(path, parser) for path, parser in commands(build_parser()) if parser.get_default("handler")]


def test_every_option_of_every_command_has_help():
    missing = [f"{' '.join(path)} {action.option_strings[0]}"
               for path, parser in commands(build_parser()) for action in parser._actions
               if action.option_strings and (action.help in (None, argparse.SUPPRESS) or not action.help.strip())]
    assert not missing, f"options without help text: {missing}"


def test_the_walk_sees_the_whole_tree():
    paths = {" ".join(path) for path, _ in leaves()}
    assert {"tollgate serve", "tollgate key issue", "tollgate client check", "tollgate client describe",
            "tollgate client call", "tollgate relation list"} <= paths


def test_store_options_only_on_commands_that_use_the_store():
    for path, parser in leaves():
        remote = parser.get_default("handler").split(".")[0] in ("client", "reflection")
        assert remote == (path[1] == "client"), path
        if remote:
            assert not options(parser) & STORE_OPTIONS, f"{' '.join(path)} offers {options(parser) & STORE_OPTIONS}"
            assert "--target" in options(parser)
        else:
            assert STORE_OPTIONS <= options(parser), path
        assert "--json" in options(parser)


@pytest.mark.parametrize("argv, usage, complaint", [
    (["key", "issue", "acme", "--bogus"], "usage: tollgate key issue ", "unrecognized arguments: --bogus"),
    (["key", "issue", "--bogus"], "usage: tollgate key issue ", "PARTNER_ID"),
    (["client", "check", "--operation", "x", "--policy", "p.yaml"], "usage: tollgate client check ",
     "unrecognized arguments: --policy p.yaml"),
    (["client", "call", "a.B/C", "{}", "--data-dir", "d"], "usage: tollgate client call ", "--data-dir"),
    (["key", "--bogus", "list", "acme"], "usage: tollgate key ", "unrecognized arguments: --bogus"),
    (["--bogus", "migrate"], "usage: tollgate ", "unrecognized arguments: --bogus"),
])
def test_a_bad_option_shows_the_usage_of_its_command(argv, usage, complaint):
    with pytest.raises(UsageError) as refused:
        build_parser().parse_args(argv)
    assert refused.value.usage.startswith(usage), refused.value.usage
    assert complaint in refused.value.message
