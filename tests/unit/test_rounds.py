"""`ledger.rounds.Rounds`: callers in flight together share one save; each gets its own
result or error."""

from __future__ import annotations

import asyncio

import pytest

from ledger.rounds import Rounds


class Refused(Exception):
    pass


def run(coro):
    return asyncio.run(coro)


def test_a_lone_item_is_saved_at_once_and_concurrent_ones_share_rounds() -> None:
    saved: list[list[int]] = []

    async def save(items: list[int]) -> list[int | BaseException]:
        saved.append(items)
        await asyncio.sleep(0.01)  # items arriving meanwhile wait for the next round
        return [Refused(i) if i == 3 else i * 10 for i in items]

    async def scenario() -> tuple[int, list[object]]:
        rounds: Rounds[int, int] = Rounds(save, max_round=4)
        lone = await rounds.submit(0)
        results = await asyncio.gather(
            *(rounds.submit(i) for i in range(1, 11)), return_exceptions=True
        )
        return lone, results

    lone, results = run(scenario())
    assert lone == 0
    assert [r if isinstance(r, int) else type(r) for r in results] == [
        10, 20, Refused, 40, 50, 60, 70, 80, 90, 100,
    ]  # fmt: skip
    assert saved == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_a_failed_round_fails_its_callers_only() -> None:
    async def save(items: list[int]) -> list[int | BaseException]:
        if 1 in items:
            raise Refused("the store is down")
        return items

    async def scenario() -> tuple[list[object], int]:
        rounds: Rounds[int, int] = Rounds(save)
        failed = await asyncio.gather(rounds.submit(1), rounds.submit(2), return_exceptions=True)
        return failed, await rounds.submit(5)

    failed, later = run(scenario())
    assert [type(f) for f in failed] == [Refused, Refused]
    assert later == 5


def test_a_caller_that_goes_away_does_not_cancel_the_round() -> None:
    saved: list[list[int]] = []

    async def save(items: list[int]) -> list[int | BaseException]:
        await asyncio.sleep(0.05)
        saved.append(items)
        return items

    async def scenario() -> int:
        rounds: Rounds[int, int] = Rounds(save)
        gone = asyncio.ensure_future(rounds.submit(1))
        kept = asyncio.ensure_future(rounds.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert run(scenario()) == 2
    assert saved == [[1, 2]]  # the round went on: item 1 was saved all the same
