import pytest

from service.domain.rate_limit import RateLimiter


def test_burst_then_rate():
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.retry_after("p", 1, 0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("p", 1, 0.0) == 1  # empty: 0.5 s to the next token, rounded up
    assert limiter.retry_after("p", 1, 0.5) == 0  # refilled at 2 per second
    assert limiter.retry_after("other", 1, 0.5) == 0  # buckets are per key


def test_refusal_spends_nothing_and_waits_are_whole_seconds():
    limiter = RateLimiter(rate=0.1, burst=2)
    limiter.retry_after("p", 2, 0.0)
    assert limiter.retry_after("p", 1, 0.0) == 10
    assert limiter.retry_after("p", 1, 10.0) == 0


def test_a_batch_costs_its_size_but_never_more_than_the_burst():
    limiter = RateLimiter(rate=1, burst=5)
    assert limiter.retry_after("p", 100, 0.0) == 0
    assert limiter.retry_after("p", 1, 0.0) == 1


def test_bounded_number_of_buckets():
    limiter = RateLimiter(rate=1, burst=1, max_keys=10)
    for key in range(100):
        limiter.retry_after(str(key), 1, 0.0)
    assert len(limiter._buckets) == 10


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0), (-1, 5)])
def test_invalid_settings(rate, burst):
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


def test_blocked_for_spends_nothing_and_follows_charges():
    limiter = RateLimiter(rate=1, burst=2)
    assert limiter.blocked_for("10.0.0.1", 0.0) == 0  # unknown key: never blocked
    limiter.retry_after("10.0.0.1", 1, 0.0)
    assert limiter.blocked_for("10.0.0.1", 0.0) == 0
    limiter.retry_after("10.0.0.1", 1, 0.0)
    assert [limiter.blocked_for("10.0.0.1", 0.0) for _ in range(3)] == [1, 1, 1]  # looking costs nothing
    assert limiter.blocked_for("10.0.0.1", 1.0) == 0
    assert limiter.blocked_for("10.0.0.2", 0.0) == 0
