"""Imports point inward: the core stays pure, and each outside library has one home (httpx, which
fetches remote issuers' keys, only in service/tokens)."""

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (SERVICE / package).rglob("*.py") if (SERVICE / package).is_dir() else [SERVICE / f"{package}.py"]:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                prefix = "." * node.level
                names.add(prefix + (node.module or ""))
        found[str(path.relative_to(SERVICE))] = names
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("domain", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "yaml", "alembic", "httpx"}),
    ("usecases", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "httpx"}),
    ("tokens", {"grpc", "sqlalchemy", "tollgate"}),
    ("store", {"grpc", "jwt", "cryptography", "tollgate", "httpx"}),
    ("transport", {"sqlalchemy", "jwt", "cryptography", "httpx"}),
    ("http", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "httpx"}),
])
def test_package_does_not_import(package, forbidden):
    for module, names in imports_of(package).items():
        absolute = {n.split(".")[0] for n in names if not n.startswith(".")}
        assert not absolute & forbidden, f"{module} imports {absolute & forbidden}"


@pytest.mark.parametrize("package, allowed_siblings", [
    ("domain", set()),
    ("tokens", {"domain"}),
    ("store", {"domain"}),
    ("usecases", {"domain"}),
    ("transport", {"domain", "usecases", "telemetry"}),
    ("http", {"domain", "usecases", "telemetry"}),
])
def test_package_imports_point_inward(package, allowed_siblings):
    for module, names in imports_of(package).items():
        siblings = {n[2:].split(".")[0] for n in names if n.startswith("..") and not n.startswith("...")}
        assert siblings <= allowed_siblings, f"{module} imports {siblings - allowed_siblings}"
