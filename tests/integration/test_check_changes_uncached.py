"""Check sees every change at once with the fact cache off too, where the partners, issuers and
revoked-token sets are kept per store revision (service/check/caching/revision_memo.py): the same
tests as test_check_changes.py, against a server started with TOLLGATE_CACHE_MAX_ENTRIES=0."""

import pytest

from tests.integration.test_check_changes import (  # noqa: F401 - collected here against the uncached world
    test_kid_rotation,
    test_not_yet_valid_token,
    test_revoked_jti,
    test_revoked_key_is_denied_on_the_next_check,
    test_suspended_partner_is_denied_on_the_next_check,
    test_token_expiry_follows_the_clock,
)
from tests.support.world import start_world, stop_world


@pytest.fixture
def world(database_url, tmp_path):
    started = start_world(database_url, tmp_path, cache_max_entries=0)
    assert started.app.settings.cache_max_entries == 0
    yield started
    stop_world(started)
