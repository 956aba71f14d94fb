"""One version everywhere: pyproject.toml, the installed package's metadata, `tollgate --version` and
the tollgate_build_info metric; the licence is Apache-2.0, in the metadata and in LICENSE."""

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from prometheus_client import generate_latest

from service.telemetry import Telemetry
from service.version import VERSION

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def test_the_version_is_the_package_metadata_one():
    assert VERSION == PROJECT["version"] == metadata.version("tollgate")


def test_tollgate_version_prints_it():
    done = subprocess.run([sys.executable, "-m", "service", "--version"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"tollgate {VERSION}\n", "")


def test_build_info_is_one_with_the_version():
    exposition = generate_latest(Telemetry().registry).decode()
    assert f'tollgate_build_info{{version="{VERSION}"}} 1.0' in exposition.splitlines()


def test_the_licence_is_apache_2_0():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert metadata.metadata("tollgate")["License-Expression"] == "Apache-2.0"
    text = (PROJECT_ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_the_changelog_keeps_a_changelog():
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n") and "https://keepachangelog.com/en/1.1.0/" in changelog
    assert "\n## [Unreleased]\n" in changelog
