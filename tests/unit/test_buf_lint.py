"""The gRPC contract passes `buf lint` (buf.yaml: STANDARD rules but SERVICE_SUFFIX), as `make lint-proto` runs it.

buf comes from the root node_modules, which `make test` installs (npm ci) before pytest runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_protos_pass_buf_lint():
    if shutil.which("npx") is None or not (PROJECT_ROOT / "node_modules" / "@bufbuild" / "buf").is_dir():
        pytest.fail("buf is not installed (node_modules/@bufbuild/buf): run `make test`, which installs it "
                    "with npm ci", pytrace=False)
    done = subprocess.run(["npx", "--no-install", "buf", "lint"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"buf lint exited {done.returncode}:\n{done.stdout}{done.stderr}"
