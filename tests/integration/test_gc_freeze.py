"""A running server moves what has lived until then out of the garbage collector's reach
(TOLLGATE_GC_FREEZE_SECONDS), so that a full collection never walks a full fact cache, and hands it
back when it stops."""

from __future__ import annotations

import gc
import time

from tests.support.world import start_world, stop_world


def test_the_server_freezes_what_has_lived_and_unfreezes_when_it_stops(database_url, tmp_path):
    gc.unfreeze()
    world = start_world(database_url, tmp_path, gc_freeze_seconds=0.1)
    try:
        at_start = gc.get_freeze_count()
        assert at_start > 0, "start-up's objects are frozen at once"
        kept = [[index] for index in range(10_000)]  # lives past the next freeze, as cached facts do
        deadline = time.monotonic() + 5
        while gc.get_freeze_count() < at_start + len(kept) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gc.get_freeze_count() >= at_start + len(kept)
        assert world.check("getUser", authorization=world.bearer("acme"), user_id="u-active").allowed
    finally:
        stop_world(world)
    assert gc.get_freeze_count() == 0, "a stopped server leaves nothing frozen"
    del kept


def test_off_freezes_nothing(database_url, tmp_path):
    gc.unfreeze()
    world = start_world(database_url, tmp_path, gc_freeze_seconds=0)
    try:
        assert gc.get_freeze_count() == 0
    finally:
        stop_world(world)
