"""A bounded run of each coverage-guided fuzz target (tests/fuzz, atheris) as part of `make test`:
the targets (native Check, ext_authz, ManageRelation and the OAuth endpoints over HTTP) run at
once, each as its own process for FUZZ_RUNS inputs from the seed corpus.
Each must exit 0 (no invariant broken, no crash, no hang) and must really have executed inputs.
New inputs and crash artefacts go to tmp_path, never into the repository. `make fuzz` runs the
targets for longer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("check", "ext_authz", "manage_relation", "token_endpoint")
FUZZ_RUNS = int(os.environ.get("TOLLGATE_FUZZ_RUNS", "300"))
# Start-up (instrumenting the service package) takes most of the time on a loaded machine.
TIMEOUT_SECONDS = 180


def test_each_fuzz_target_runs_clean(tmp_path):
    processes = {}
    for target in TARGETS:
        scratch, artefacts = tmp_path / target, tmp_path / f"artefacts-{target}"
        scratch.mkdir()
        artefacts.mkdir()
        command = [sys.executable, "-m", f"tests.fuzz.{target}", f"-runs={FUZZ_RUNS}", "-timeout=30",
                   "-rss_limit_mb=2048", "-max_total_time=60", f"-dict={PROJECT_ROOT / 'tests/fuzz/tollgate.dict'}",
                   f"-artifact_prefix={artefacts}/", str(scratch), str(PROJECT_ROOT / "tests/fuzz/corpus" / target)]
        env = {**os.environ, "TOLLGATE_FUZZ_DATA_DIR": str(tmp_path / f"data-{target}")}
        processes[target] = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True)
    failures = []
    for target, process in processes.items():
        try:
            output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            failures.append(f"{target}: no end within {TIMEOUT_SECONDS}s\n{_tail(output)}")
            continue
        done = re.search(r"^Done (\d+) runs in", output, re.MULTILINE)
        if process.returncode != 0 or not done:
            failures.append(f"{target}: exit {process.returncode}\n{_tail(output)}")
        elif int(done[1]) < min(FUZZ_RUNS, 50):
            failures.append(f"{target}: only {done[1]} inputs executed\n{_tail(output)}")
        elif list((tmp_path / f"artefacts-{target}").iterdir()):
            failures.append(f"{target}: left crash artefacts\n{_tail(output)}")
    assert not failures, "\n\n".join(failures)


def _tail(output: str, lines: int = 60) -> str:
    kept = [line for line in output.splitlines() if not line.startswith(("INFO: Instrumenting", "WARNING: Failed"))]
    return "\n".join(kept[-lines:])
