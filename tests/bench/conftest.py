"""Microbenchmarks (pytest-benchmark) are not part of `make test`.

The files of this folder are not even collected unless benchmarks are asked for, with
`TOLLGATE_BENCH=1` or pytest-benchmark's `--benchmark-enable`:

    TOLLGATE_BENCH=1 .venv/bin/python -m pytest tests/bench
    .venv/bin/python -m pytest tests/bench --benchmark-enable

The `bench` marker is registered here (the marker list in pyproject.toml is not touched); a module
named explicitly on the command line is collected, and its `bench`-marked tests are then skipped
unless benchmarks were asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BENCH_ENV = "TOLLGATE_BENCH"
_HERE = Path(__file__).resolve().parent


def benchmarks_enabled(config: pytest.Config) -> bool:
    return os.environ.get(BENCH_ENV) == "1" or bool(config.getoption("benchmark_enable", default=False))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"bench: microbenchmarks (pytest-benchmark); run only with {BENCH_ENV}=1 or --benchmark-enable")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and collection_path.parent == _HERE and not benchmarks_enabled(config):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if benchmarks_enabled(config):
        return
    skip = pytest.mark.skip(reason=f"a microbenchmark: set {BENCH_ENV}=1 or pass --benchmark-enable")
    for item in items:
        if item.get_closest_marker("bench") is not None:
            item.add_marker(skip)
