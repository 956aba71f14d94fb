"""`make clients` generates client code for every language into CLIENTS_DIR/<language>/ (a few seconds).

It needs the root node_modules (protoc-gen-es, proto-loader-gen-types), which `make test` installs
before pytest runs; the full protoc it uses is installed into the venv by the Makefile itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# language directory -> files that must be there (one per generator run, relative to the directory)
EXPECTED = {
    "cpp": ["tollgate/v1/authorization.pb.h", "tollgate/v1/authorization.pb.cc"],
    "csharp": ["Authorization.cs", "Relations.cs", "Common.cs"],
    "java": ["tollgate/v1/AuthorizationOuterClass.java", "tollgate/v1/RelationsOuterClass.java"],
    "kotlin": ["tollgate/v1/CheckRequestKt.kt", "tollgate/v1/RelationKt.kt"],
    "objc": ["tollgate/v1/Authorization.pbobjc.h", "tollgate/v1/Authorization.pbobjc.m"],
    "php": ["Tollgate/V1/CheckRequest.php", "GPBMetadata/Tollgate/V1/Authorization.php"],
    "ruby": ["tollgate/v1/authorization_pb.rb", "tollgate/v1/authorization_pb.rbs"],
    "rust": ["tollgate/v1/generated.rs", "tollgate/v1/authorization.u.pb.rs"],
    "python": ["tollgate/v1/authorization_pb2.py", "tollgate/v1/authorization_pb2.pyi",
               "tollgate/v1/authorization_pb2_grpc.py", "tollgate/v1/relations_pb2_grpc.py"],
    "javascript": ["tollgate/v1/authorization_pb.js", "tollgate/v1/authorization_pb.d.ts", "package.json"],
    "typescript": ["tollgate/v1/authorization_pb.ts", "tollgate/v1/relations_pb.ts",
                   "grpc-js/authorization.ts", "grpc-js/tollgate/v1/Authorization.ts"],
}


def test_make_clients_generates_every_language(tmp_path):
    if shutil.which("make") is None or shutil.which("npx") is None:
        pytest.fail("make and Node.js (npx) are needed: install them and run `make test`", pytrace=False)
    if not (PROJECT_ROOT / "node_modules" / ".bin" / "protoc-gen-es").exists():
        pytest.fail("node_modules is missing: run `make test`, which installs it with npm ci", pytrace=False)
    out = tmp_path / "clients"
    venv = Path(sys.prefix)
    # -o: the running venv and node_modules are taken as they are (make test has just set them up).
    done = subprocess.run(
        ["make", "clients", f"CLIENTS_DIR={out}", f"VENV={venv}", "-o", f"{venv}/.installed-stamp",
         "-o", "node_modules/.installed-stamp"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"make clients exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)
    missing = [f"{lang}/{name}" for lang, names in EXPECTED.items() for name in names if not (out / lang / name).is_file()]
    assert not missing, f"not generated: {missing}\n{done.stdout}"
