"""Token-bucket math (pure): refill, debt and the wait it implies."""

from __future__ import annotations

import pytest

from worker.pacing import BucketSpec, refill, take

ACCOUNT = BucketSpec(capacity=50, refill_per_second=1.0)
GLOBAL = BucketSpec(capacity=200, refill_per_second=3.0)


def test_full_bucket_gives_a_burst_of_capacity_then_waits() -> None:
    tokens = ACCOUNT.capacity
    waits = []
    for _ in range(53):
        tokens, wait = take(tokens, ACCOUNT)
        waits.append(wait)
    assert waits[:50] == [0.0] * 50
    assert waits[50:] == [1.0, 2.0, 3.0]  # debt: each next token is one refill interval later


def test_refill_is_capped_and_never_negative_in_time() -> None:
    assert refill(0.0, 10.0, ACCOUNT) == 10.0
    assert refill(45.0, 10.0, ACCOUNT) == 50.0
    assert refill(-3.0, 1.5, GLOBAL) == pytest.approx(1.5)
    assert refill(5.0, -20.0, ACCOUNT) == 5.0  # a clock that went back refills nothing


def test_global_rate_spaces_tokens_by_fractions_of_a_second() -> None:
    tokens, wait = take(0.0, GLOBAL)
    assert wait == pytest.approx(1 / 3)
    tokens, wait = take(tokens, GLOBAL)
    assert wait == pytest.approx(2 / 3)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BucketSpec(capacity=0.5, refill_per_second=1)
    with pytest.raises(ValueError, match="refill"):
        BucketSpec(capacity=5, refill_per_second=0)
