"""Creates saved in rounds (`api.creates.JobCreates` over `JobLedger.create_jobs`), on both
stores: each request gets what `create_job` would have told it, replays and conflicting keys
alone, and every job said to be created is in the store."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import anyio.to_thread
import pytest

from api.creates import JobCreates
from ledger.application import Created, JobLedger
from ledger.errors import IdempotencyConflict, StoreUnavailable
from ledger.job import Job
from tests.conftest import make_new_job


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def stored(ledger: JobLedger, created: Created) -> Job:
    job = ledger.repository.get(created.job.id)
    assert isinstance(job, Job)
    return job


def test_concurrent_requests_share_rounds_and_each_gets_its_own_answer(ledger: JobLedger) -> None:
    before = ledger.create_job(
        make_new_job(board_id="b-old"), tenant_id="t", idempotency_key="old", actor="a"
    )

    async def run() -> tuple[list[Any], int]:
        creates = JobCreates(ledger, _call)
        requests = [("t", f"new-{i}", make_new_job(board_id="b-new")) for i in range(30)]
        requests.append(("t", "old", make_new_job(board_id="b-old")))  # a replay
        requests.append(("t", "old", make_new_job(board_id="b-other")))  # the key, reused
        results = await asyncio.gather(
            *(
                creates.create(new, tenant_id=tenant, idempotency_key=key, actor="a")
                for tenant, key, new in requests
            ),
            return_exceptions=True,
        )
        return results, creates.rounds

    results, rounds = asyncio.run(run())
    *new, replay, conflict = results
    assert rounds < len(results)  # requests were saved together
    assert all(isinstance(r, Created) and r.created for r in new)
    assert len({r.job.id for r in new}) == 30
    for result in new:  # really written, each with its position in the log
        assert stored(ledger, result).board_id == "b-new"
        assert result.positions
    assert isinstance(replay, Created) and not replay.created
    assert replay.job.id == before.job.id
    assert isinstance(conflict, IdempotencyConflict)
    assert stored(ledger, before).board_id == "b-old"


def test_a_refused_round_is_saved_job_by_job(ledger: JobLedger) -> None:
    """The store refuses a round holding a used key; the new jobs of that round are still all
    written (their events were collected by the refused save and must be saved again)."""
    ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="used", actor="a")
    jobs = [
        ledger.new_job(make_new_job(), tenant_id="t", idempotency_key=key, actor="a")
        for key in ("fresh-1", "used", "fresh-2")
    ]
    first, replay, second = ledger.create_jobs(jobs)
    assert isinstance(first, Created) and first.created and first.positions
    assert isinstance(replay, Created) and not replay.created
    assert isinstance(second, Created) and second.created and second.positions
    assert stored(ledger, first).version == 1
    assert stored(ledger, second).version == 1


def test_a_store_failure_fails_the_round_and_the_next_one_works(ledger: JobLedger) -> None:
    failing = {"on": True}

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if failing["on"]:
            raise StoreUnavailable("the store is down")
        return await _call(fn, *args, **kwargs)

    async def run() -> tuple[list[Any], Any]:
        creates = JobCreates(ledger, call)
        failed = await asyncio.gather(
            *(
                creates.create(make_new_job(), tenant_id="t", idempotency_key=k, actor="a")
                for k in ("x", "y")
            ),
            return_exceptions=True,
        )
        failing["on"] = False
        later = await creates.create(make_new_job(), tenant_id="t", idempotency_key="x", actor="a")
        return failed, later

    failed, later = asyncio.run(run())
    assert all(isinstance(r, StoreUnavailable) for r in failed)
    assert isinstance(later, Created) and later.created  # nothing of the failed round written


@pytest.mark.parametrize("size", [1, 250])
def test_rounds_are_bounded_and_a_lone_request_is_saved_at_once(ledger: JobLedger, size) -> None:
    async def run() -> tuple[list[Created], int]:
        creates = JobCreates(ledger, _call)
        results = await asyncio.gather(
            *(
                creates.create(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a")
                for i in range(size)
            )
        )
        return list(results), creates.rounds

    results, rounds = asyncio.run(run())
    assert all(r.created for r in results)
    assert rounds == (1 if size == 1 else 2)  # 200 at most per round
