"""generated/ must be exactly what `make proto` makes from protos/ (CI fails when it is stale)."""

import filecmp
from pathlib import Path

from service.protogen import PROJECT_ROOT, generate


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_code_matches_protos(tmp_path):
    generate(tmp_path)
    committed = PROJECT_ROOT / "generated"
    assert _files(tmp_path) == _files(committed), "run `make proto` and commit generated/"
    stale = [f for f in _files(tmp_path) if not filecmp.cmp(tmp_path / f, committed / f, shallow=False)]
    assert not stale, f"run `make proto` and commit generated/: {stale}"
