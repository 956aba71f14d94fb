"""Imports point inward: the core stays pure, and each outside library has one home (httpx, which
fetches remote issuers' keys, only in service/tokens). The Check capability's core (service/check)
knows none of its shortcuts (service/check/caching), which only the composition root stacks."""

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"


def imports_of(package: str) -> dict[str, set[str]]:
    """Per module of `package` (a directory or a module under service/, "check/caching" too): the
    names it imports, relative imports resolved to paths under service/ ("domain.model")."""
    found: dict[str, set[str]] = {}
    root = SERVICE / package
    for path in root.rglob("*.py") if root.is_dir() else [SERVICE / f"{package}.py"]:
        here = list(path.relative_to(SERVICE).parent.parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module or "")
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                names.add("service:" + ".".join([*base, *(node.module.split(".") if node.module else [])]))
        found[str(path.relative_to(SERVICE))] = names
    return found


def service_imports(names: set[str]) -> set[str]:
    """The imports of our own modules, as paths under service/ ("check.caching.facts")."""
    return {name.removeprefix("service:") for name in names if name.startswith("service:")}


@pytest.mark.parametrize("package, forbidden", [
    ("domain", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "yaml", "alembic", "httpx"}),
    ("usecases", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "httpx"}),
    ("check", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "yaml", "alembic", "httpx", "envoy"}),
    ("tokens", {"grpc", "sqlalchemy", "tollgate"}),
    ("store", {"grpc", "jwt", "cryptography", "tollgate", "httpx"}),
    ("transport", {"sqlalchemy", "jwt", "cryptography", "httpx"}),
    ("http", {"grpc", "sqlalchemy", "jwt", "cryptography", "tollgate", "httpx"}),
])
def test_package_does_not_import(package, forbidden):
    for module, names in imports_of(package).items():
        absolute = {n.split(".")[0] for n in names if not n.startswith("service:")}
        assert not absolute & forbidden, f"{module} imports {absolute & forbidden}"


# What each package may import of ours, by path prefix under service/ (its own modules always).
ALLOWED = {
    "domain": set(),
    "tokens": {"domain"},
    "store": {"domain"},
    "usecases": {"domain"},
    "check": {"domain"},
    "check/caching": {"domain", "check"},
    "transport": {"domain", "usecases", "telemetry", "check.ports", "check.query"},
    "http": {"domain", "usecases", "telemetry"},
}


@pytest.mark.parametrize("package", list(ALLOWED))
def test_package_imports_point_inward(package):
    own = package.replace("/", ".")
    for module, names in imports_of(package).items():
        if package == "check" and module.startswith("check/caching/"):
            continue  # its own row
        for name in service_imports(names):
            if name == own or name.startswith(own + "."):
                if package == "check":  # the core never reaches for a shortcut
                    assert not name.startswith("check.caching"), f"{module} imports {name}"
                continue
            assert any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED[package]), \
                f"{module} imports {name}"


def test_the_resolver_sees_every_kind_of_import():
    """The rows above are only as good as the import resolution they rest on."""
    caching = imports_of("check/caching")
    assert "service:domain.bounded" in caching["check/caching/remembering.py"]
    assert "service:check.ports" in caching["check/caching/remembering.py"]
    assert "service:check.caching.fact_cache" in caching["check/caching/remembering.py"]
    assert "service:check.query" in imports_of("transport")["transport/authorization.py"]
