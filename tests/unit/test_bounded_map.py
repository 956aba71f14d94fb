"""BoundedMap, behind every memo and cache: at most max_entries, emptied when full or least recently
used first."""

from __future__ import annotations

import pytest

from service.domain.bounded import BoundedMap

MISSING = object()


@pytest.mark.parametrize("lru", [False, True])
def test_it_never_holds_more_than_max_entries(lru):
    bounded: BoundedMap[int, int] = BoundedMap(3, lru=lru)
    for key in range(20):
        bounded.put(key, key * 10)
        assert len(bounded) <= 3
    assert bounded.get(19) == 190, "the newest entry is always kept"


@pytest.mark.parametrize("lru", [False, True])
def test_a_kept_value_is_found_and_a_missing_one_gives_the_default(lru):
    bounded: BoundedMap[str, str] = BoundedMap(2, lru=lru)
    bounded.put("a", "A")
    assert bounded.get("a") == "A"
    assert bounded.get("b") is None
    assert bounded.get("b", "fallback") == "fallback"


@pytest.mark.parametrize("lru", [False, True])
def test_putting_a_kept_key_again_replaces_it_without_evicting(lru):
    bounded: BoundedMap[str, int] = BoundedMap(2, lru=lru)
    bounded.put("a", 1)
    bounded.put("b", 2)
    bounded.put("a", 3)
    assert (bounded.get("a"), bounded.get("b"), len(bounded)) == (3, 2, 2)


def test_lru_evicts_the_least_recently_used():
    bounded: BoundedMap[str, int] = BoundedMap(2, lru=True)
    bounded.put("a", 1)
    bounded.put("b", 2)
    bounded.put("c", 3)
    assert bounded.get("a") is None
    assert (bounded.get("b"), bounded.get("c")) == (2, 3)


def test_lru_get_makes_an_entry_the_most_recent():
    bounded: BoundedMap[str, int] = BoundedMap(2, lru=True)
    bounded.put("a", 1)
    bounded.put("b", 2)
    assert bounded.get("a") == 1  # now "b" is the least recently used
    bounded.put("c", 3)
    assert bounded.get("b") is None
    assert (bounded.get("a"), bounded.get("c")) == (1, 3)


def test_a_miss_does_not_change_the_lru_order():
    bounded: BoundedMap[str, int] = BoundedMap(2, lru=True)
    bounded.put("a", 1)
    bounded.put("b", 2)
    assert bounded.get("z") is None
    bounded.put("c", 3)
    assert bounded.get("a") is None and bounded.get("b") == 2


def test_without_lru_a_full_map_is_emptied_to_make_room():
    bounded: BoundedMap[str, int] = BoundedMap(3)
    for key in "abc":
        bounded.put(key, ord(key))
    assert bounded.get("a") == ord("a")  # a get does not protect an entry here
    bounded.put("d", 4)
    assert len(bounded) == 1
    assert [bounded.get(key) for key in "abc"] == [None, None, None]
    assert bounded.get("d") == 4


@pytest.mark.parametrize("lru", [False, True])
def test_none_values_are_told_apart_from_missing_ones_with_a_sentinel(lru):
    bounded: BoundedMap[str, object] = BoundedMap(2, lru=lru)
    bounded.put("none", None)
    assert bounded.get("none", MISSING) is None
    assert bounded.get("absent", MISSING) is MISSING


@pytest.mark.parametrize("lru", [False, True])
def test_clear_empties_it(lru):
    bounded: BoundedMap[str, int] = BoundedMap(2, lru=lru)
    bounded.put("a", 1)
    bounded.clear()
    assert len(bounded) == 0 and bounded.get("a") is None
    bounded.put("b", 2)
    assert bounded.get("b") == 2


@pytest.mark.parametrize("max_entries", [0, -1])
@pytest.mark.parametrize("lru", [False, True])
def test_fewer_than_one_entry_is_refused(max_entries, lru):
    with pytest.raises(ValueError, match="at least one entry"):
        BoundedMap(max_entries, lru=lru)


@pytest.mark.parametrize("lru", [False, True])
def test_a_map_of_one_entry_keeps_the_latest(lru):
    bounded: BoundedMap[str, int] = BoundedMap(1, lru=lru)
    bounded.put("a", 1)
    bounded.put("b", 2)
    assert (bounded.get("a"), bounded.get("b"), len(bounded)) == (None, 2, 1)


def test_lru_put_of_a_kept_key_makes_it_the_most_recent():
    bounded: BoundedMap[str, int] = BoundedMap(2, lru=True)
    bounded.put("a", 1)
    bounded.put("b", 2)
    bounded.put("a", 10)  # now "b" is the least recently used
    bounded.put("c", 3)
    assert bounded.get("b") is None
    assert (bounded.get("a"), bounded.get("c")) == (10, 3)
