"""The `tollgate` command line: administration of the store, the server, and a gRPC client.

Layout: parser.py (arguments), commands.py (local store handlers), client.py (gRPC handlers),
output.py / views.py (formatting), values.py (durations, files, secrets), local.py (wiring).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from ..config import ConfigError
from ..domain.errors import DomainError
from .output import CommandFailed, Output
from .parser import UsageError, build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. Exit codes: 0 done, 1 an RPC failed, 2 bad input or an unusable store."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Output(as_json="--json" in argv)
    try:
        args = build_parser().parse_args(argv)
        out.as_json = bool(getattr(args, "json", False))
        _handler(args.handler)(args, out)
    except UsageError as error:
        print(error.usage.rstrip(), file=sys.stderr)
        out.error(error.message, {"reason": "usage"})
        return 2
    except CommandFailed as failure:
        out.error(failure.message, failure.details)
        return failure.exit_code
    except DomainError as error:
        out.error(error.message, {k: v for k, v in (("reason", error.reason), ("field", error.field)) if v})
        return 2
    except ConfigError as error:
        out.error(str(error), {"reason": "invalid_configuration"})
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001  (the last line of defence: a message, never a stack trace)
        out.error(f"unexpected {type(error).__name__}: {error}", {"reason": "internal"})
        return 2
    return 0


def _handler(name: str):
    module, _, function = name.rpartition(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
