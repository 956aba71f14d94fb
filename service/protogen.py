"""Regenerates the Python code in generated/ from protos/ (used by `make proto` and the freshness test)."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = PROJECT_ROOT / "protos"


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Runs protoc (from grpcio-tools) over every proto into out_dir, with packages' __init__.py."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package_dir in {(out_dir / f).parent for f in proto_files()}:
        while package_dir != out_dir:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


if __name__ == "__main__":
    generate(Path(sys.argv[1] if len(sys.argv) > 1 else PROJECT_ROOT / "generated"))
