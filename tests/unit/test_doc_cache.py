"""`DocCache`: the status documents the view's owner keeps in memory (pure, no I/O)."""

from __future__ import annotations

from uuid import UUID, uuid4

from projections.doc_cache import DocCache

JOB = UUID("00000000-0000-4000-8000-000000000001")


def owned_cache(size: int = 8) -> DocCache:
    cache = DocCache(size)
    cache.set_owned(True)
    return cache


def test_a_written_document_is_served_only_once_its_batch_committed() -> None:
    cache = owned_cache()
    cache.stage(str(JOB), "acme", '{"state":"queued"}')
    assert cache.get(JOB, "acme") is None  # the view's transaction may still roll back
    cache.commit()
    assert cache.get(JOB, "acme") == '{"state":"queued"}'
    assert cache.get(JOB, None) == '{"state":"queued"}'  # the admin reads every tenant's
    cache.stage(str(JOB), "acme", '{"state":"canceled"}')
    cache.commit()
    assert cache.get(JOB, "acme") == '{"state":"canceled"}'


def test_another_tenants_job_is_never_served() -> None:
    cache = owned_cache()
    cache.stage(str(JOB), "acme", "{}")
    cache.commit()
    assert cache.get(JOB, "other") is None


def test_a_rolled_back_batch_is_dropped_with_everything_kept() -> None:
    cache = owned_cache()
    cache.stage(str(JOB), "acme", "{}")
    cache.commit()
    other = uuid4()
    cache.stage(str(other), "acme", "{}")
    cache.abandon()  # the runner's `forget`: a failed batch, or another runner moved first
    cache.commit()  # (the next batch's commit publishes nothing of the one abandoned)
    assert cache.get(JOB, "acme") is None
    assert cache.get(other, "acme") is None
    assert len(cache) == 0


def test_a_read_that_raced_a_batch_does_not_put_back_what_the_batch_replaced() -> None:
    cache = owned_cache()
    taken = cache.generation  # a reader starts its database read...
    cache.stage(str(JOB), "acme", '{"state":"canceled"}')
    cache.commit()  # ...a batch rewrites the job meanwhile; the read saw the row before it
    cache.fill(JOB, "acme", '{"state":"queued"}', taken)
    assert cache.get(JOB, "acme") == '{"state":"canceled"}'
    cache.set_owned(True)  # (empties it)
    cache.fill(JOB, "acme", '{"state":"queued"}', taken)
    assert cache.get(JOB, "acme") is None
    cache.fill(JOB, "acme", '{"state":"canceled"}', cache.generation)
    assert cache.get(JOB, "acme") == '{"state":"canceled"}'


def test_it_keeps_nothing_unless_this_process_owns_the_view() -> None:
    cache = DocCache()  # standing by
    cache.stage(str(JOB), "acme", "{}")
    cache.commit()
    cache.fill(JOB, "acme", "{}", cache.generation)
    assert cache.get(JOB, "acme") is None
    cache.set_owned(True)
    cache.fill(JOB, "acme", "{}", cache.generation)
    assert cache.get(JOB, "acme") == "{}"
    cache.set_owned(False)  # the lock was lost: another process may write the view now
    assert cache.get(JOB, "acme") is None
    cache.fill(JOB, "acme", "{}", cache.generation)
    assert len(cache) == 0


def test_it_holds_at_most_its_size_dropping_the_least_recently_written() -> None:
    cache = owned_cache(size=3)
    jobs = [uuid4() for _ in range(4)]
    for job in jobs[:3]:
        cache.stage(str(job), "acme", str(job))
    cache.commit()
    cache.stage(str(jobs[0]), "acme", "rewritten")  # the oldest, written again: kept
    cache.stage(str(jobs[3]), "acme", str(jobs[3]))
    cache.commit()
    assert len(cache) == 3
    assert cache.get(jobs[1], "acme") is None
    assert cache.get(jobs[0], "acme") == "rewritten"
    assert cache.get(jobs[3], "acme") == str(jobs[3])
    assert (cache.hits, cache.misses) == (2, 1)
