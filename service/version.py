"""The version of Tollgate: the one in the installed package's metadata (pyproject.toml's
[project] version), so `tollgate --version`, the `tollgate_build_info` metric and the package
never disagree."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "tollgate"


def _installed_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # a source tree that was never installed (`pip install -e .`)
        return "0+unknown"


VERSION = _installed_version()
