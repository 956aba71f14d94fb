"""The lock files keep up with pyproject.toml: requirements.txt pins every runtime dependency and
requirements-dev.txt every dev extra too, each at a version the specifier admits, with the hashes
`pip install --require-hashes` needs; the dev lock holds the runtime pins unchanged, and both carry the
build requirements the Makefile and the Dockerfile build the project with (--no-build-isolation).

A dependency added to pyproject.toml without `make lock` fails here, not later on a fresh clone.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK = PROJECT_ROOT / "requirements.txt"
DEV_LOCK = PROJECT_ROOT / "requirements-dev.txt"


def read_lock(path: Path) -> dict[str, tuple[Requirement, list[str]]]:
    """Each pinned package of a pip-compile file: its requirement (with marker) and its hashes."""
    text = path.read_text().replace("\\\n", " ")
    pins: dict[str, tuple[Requirement, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: an option line ({line}); pip-compile writes none here"
        words = line.split()
        hashes = [w.removeprefix("--hash=") for w in words if w.startswith("--hash=")]
        requirement = Requirement(" ".join(w for w in words if not w.startswith("--hash=")))
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} twice"
        pins[name] = (requirement, hashes)
    return pins


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement}: not pinned with =="
    return specifier.version


@pytest.fixture(scope="module")
def runtime_lock():
    return read_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev_lock():
    return read_lock(DEV_LOCK)


@pytest.mark.parametrize("path", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_package_is_pinned_with_its_hashes(path):
    pins = read_lock(path)
    assert pins, f"{path.name} pins nothing"
    for name, (requirement, hashes) in pins.items():
        pinned_version(requirement)
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{path.name}: {name} has no sha256 hash"


def assert_locked(requirement: Requirement, lock: dict[str, tuple[Requirement, list[str]]], lock_name: str) -> None:
    name = canonicalize_name(requirement.name)
    assert name in lock, f"{requirement} is not in {lock_name}: run `make lock`"
    locked, _ = lock[name]
    version = pinned_version(locked)
    assert requirement.specifier.contains(version, prereleases=True), \
        f"{lock_name} pins {name}=={version}, outside {requirement.specifier}: run `make lock`"


def test_the_runtime_lock_holds_every_runtime_dependency(runtime_lock):
    for line in PYPROJECT["project"]["dependencies"]:
        assert_locked(Requirement(line), runtime_lock, RUNTIME_LOCK.name)


def test_the_dev_lock_holds_every_dev_extra_with_its_platform_marker(dev_lock):
    for line in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        assert_locked(requirement, dev_lock, DEV_LOCK.name)
        if requirement.marker is not None:  # atheris: Linux x86_64 only, and the lock must say so
            locked, _ = dev_lock[canonicalize_name(requirement.name)]
            assert locked.marker is not None and Marker(str(locked.marker)) == Marker(str(requirement.marker)), \
                f"{DEV_LOCK.name}: {locked} lost the marker {requirement.marker}"


def test_the_dev_lock_keeps_the_runtime_pins(runtime_lock, dev_lock):
    # The same version, marker and hashes. The dev lock may name extras a dev tool needs
    # (cerbos's httpx[http2]); the runtime lock, a constraints file too, cannot.
    def pin(requirement: Requirement, hashes: list[str]) -> tuple:
        return requirement.name, str(requirement.specifier), str(requirement.marker), sorted(hashes)

    for name, (requirement, hashes) in runtime_lock.items():
        assert name in dev_lock, f"{DEV_LOCK.name} lacks {name}"
        locked, locked_hashes = dev_lock[name]
        assert pin(locked, locked_hashes) == pin(requirement, hashes), \
            f"{name}: {requirement} in {RUNTIME_LOCK.name}, {locked} in {DEV_LOCK.name}"
        assert not requirement.extras, f"{RUNTIME_LOCK.name} is a constraints file: {requirement} names extras"


def test_both_locks_hold_the_build_requirements(runtime_lock, dev_lock):
    for line in PYPROJECT["build-system"]["requires"]:
        assert_locked(Requirement(line), runtime_lock, RUNTIME_LOCK.name)
        assert_locked(Requirement(line), dev_lock, DEV_LOCK.name)


def test_pyjwt_is_the_release_with_the_2026_advisories_fixed(runtime_lock):
    requirement, _ = runtime_lock["pyjwt"]
    assert pinned_version(requirement) == "2.15.1"
