"""Which CPU a server process runs on (service/affinity.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.affinity import cpu_for


def test_workers_take_the_allowed_cpus_in_turn():
    allowed = {3, 1, 7}
    assert [cpu_for(index, allowed) for index in range(5)] == [1, 3, 7, 1, 3]


def test_a_single_cpu_is_left_alone():
    assert cpu_for(0, {2}) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs to choose from")
def test_a_pinned_process_and_the_threads_it_starts_run_on_one_cpu():
    # In a process of its own: pinning this test process would pin the rest of the test run.
    script = (
        "import os, threading\n"
        "from service.affinity import pin_this_process\n"
        "cpu = pin_this_process(1)\n"
        "seen = []\n"
        "thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))\n"
        "thread.start(); thread.join()\n"
        "print(cpu, sorted(os.sched_getaffinity(0)), sorted(seen[0]))\n")
    allowed = sorted(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))).stdout
    assert out.split() == [str(allowed[1]), f"[{allowed[1]}]", f"[{allowed[1]}]"]
