"""`DocCache`: status documents kept in memory, each with the view position it reflects, true
to the changes its follower has seen (pure, no I/O)."""

from __future__ import annotations

import threading
import time
from uuid import UUID, uuid4

from projections.doc_cache import FOLLOW_STALE_SECONDS, DocCache, DocFollower

JOB = UUID("00000000-0000-4000-8000-000000000001")
KEY = str(JOB)


def following(at: int = 10, **sizes: int) -> DocCache:
    cache = DocCache(**sizes)
    cache.follow_from(at)
    return cache


def test_nothing_is_kept_or_served_unless_the_log_is_followed() -> None:
    cache = DocCache()
    cache.stage(KEY, "acme", "{}")
    cache.commit(5)
    cache.fill(JOB, "acme", "{}", 5)
    assert cache.get(JOB, "acme") is None
    assert len(cache) == 0
    cache.follow_from(5)
    cache.fill(JOB, "acme", "{}", 5)
    assert cache.get(JOB, "acme") == "{}"
    cache.stop_following()  # the log could not be read: changes may go unseen
    assert cache.get(JOB, "acme") is None
    assert len(cache) == 0


def test_a_batch_is_kept_at_commit_only_and_a_later_change_drops_it() -> None:
    cache = following(10)
    cache.stage(KEY, "acme", '{"state":"queued"}')
    assert cache.get(JOB, "acme") is None  # the view's transaction may still roll back
    cache.commit(12)
    assert cache.get(JOB, "acme") == '{"state":"queued"}'
    assert cache.get(JOB, None) == '{"state":"queued"}'  # the admin reads every tenant's
    cache.followed([(11, KEY), (12, KEY)], up_to=12)  # what the batch applied: still true
    assert cache.get(JOB, "acme") == '{"state":"queued"}'
    cache.followed([(15, KEY)], up_to=20)  # a change the view has not applied here yet
    assert cache.get(JOB, "acme") is None
    cache.stage(KEY, "acme", '{"state":"canceled"}')
    cache.abandon()  # rolled back
    cache.commit(14)  # (publishes nothing of the batch abandoned)
    assert cache.get(JOB, "acme") is None


def test_a_read_older_than_a_change_seen_is_not_kept_nor_replaces_a_newer_one() -> None:
    cache = following(10)
    cache.followed([(15, KEY)], up_to=20)
    cache.fill(JOB, "acme", '{"state":"queued"}', 14)  # the view had not reached 15
    assert cache.get(JOB, "acme") is None
    cache.fill(JOB, "acme", '{"state":"canceled"}', 15)
    assert cache.get(JOB, "acme") == '{"state":"canceled"}'
    cache.fill(JOB, "acme", '{"state":"queued"}', 14)  # a slower read of the older row
    assert cache.get(JOB, "acme") == '{"state":"canceled"}'
    cache.fill(JOB, "acme", '{"state":"queued"}', 9)  # before the follower began: unknown
    other = uuid4()
    cache.fill(other, "acme", "{}", 9)
    assert cache.get(other, "acme") is None


def test_min_position_is_answered_only_when_the_document_or_the_follower_reaches_it() -> None:
    cache = following(10)
    cache.fill(JOB, "acme", "{}", 12)
    assert cache.get(JOB, "acme", 12) == "{}"
    assert cache.get(JOB, "acme", 13) is None  # the follower is at 10: unknown
    cache.followed([], up_to=30)  # nothing happened to this job up to 30
    assert cache.get(JOB, "acme", 30) == "{}"
    assert cache.get(JOB, "acme", 31) is None


def test_another_tenants_job_is_never_served() -> None:
    cache = following()
    cache.fill(JOB, "acme", "{}", 10)
    assert cache.get(JOB, "other") is None
    assert (cache.hits, cache.misses) == (0, 1)


def test_forgotten_changes_raise_the_position_a_document_needs() -> None:
    cache = following(10, changed_size=2)
    jobs = [str(uuid4()) for _ in range(3)]
    cache.followed([(11, jobs[0]), (12, jobs[1]), (13, jobs[2])], up_to=13)  # 11 forgotten
    cache.fill(UUID(jobs[0]), "acme", "{}", 10)  # (its change at 11 is no longer known)
    assert cache.get(UUID(jobs[0]), "acme") is None
    cache.fill(UUID(jobs[0]), "acme", "{}", 11)
    assert cache.get(UUID(jobs[0]), "acme") == "{}"


def test_it_holds_at_most_its_size_dropping_the_least_recently_written() -> None:
    cache = following(size=3)
    jobs = [uuid4() for _ in range(4)]
    for job in jobs[:3]:
        cache.stage(str(job), "acme", str(job))
    cache.commit(20)
    cache.stage(str(jobs[0]), "acme", "rewritten")  # the oldest, written again: kept
    cache.stage(str(jobs[3]), "acme", str(jobs[3]))
    cache.commit(21)
    assert len(cache) == 3
    assert cache.get(jobs[1], "acme") is None
    assert cache.get(jobs[0], "acme") == "rewritten"
    assert cache.get(jobs[3], "acme") == str(jobs[3])


class FlakyLog:
    """A recorder's two reads the follower makes, over a scripted log; `fail` makes the next
    read raise (the store went away)."""

    def __init__(self) -> None:
        self.changes: list[tuple[int, UUID]] = []
        self.fail = 0

    def max_notification_id(self) -> int:
        return max((at for at, _ in self.changes), default=0)

    def select_changed_after(
        self, start: int, limit: int, topics: list[str]
    ) -> tuple[int, list[tuple[int, UUID]]]:
        if self.fail:
            self.fail -= 1
            raise OSError("connection lost")
        return self.max_notification_id(), [c for c in self.changes if c[0] > start][:limit]


def test_the_follower_keeps_nothing_while_it_cannot_read_the_log_and_restarts_at_its_head() -> None:
    log = FlakyLog()
    cache = DocCache()
    follower = DocFollower(log, cache, frozenset({"t"}), poll_seconds=0.01)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not cache.following:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        cache.fill(JOB, "acme", "{}", 0)
        assert cache.get(JOB, "acme") == "{}"
        log.changes.append((1, JOB))
        follower.wake(frozenset({"t"}))
        while cache.get(JOB, "acme") is not None:
            assert time.monotonic() < deadline, "the change went unseen"
            time.sleep(0.005)
        cache.fill(JOB, "acme", "{}", 1)
        log.fail = 1000
        while cache.following:  # stopped: the log cannot be read
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert cache.get(JOB, "acme") is None
        cache.fill(JOB, "acme", "{}", 1)
        assert len(cache) == 0
        log.changes.append((2, uuid4()))  # written while it could not read
        log.fail = 0
        while not cache.following:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        cache.fill(JOB, "acme", "{}", 1)  # older than where it started again: unknown since
        assert cache.get(JOB, "acme") is None
        cache.fill(JOB, "acme", "{}", 2)
        assert cache.get(JOB, "acme") == "{}"
    finally:
        stop.set()
        follower.wake()
        thread.join(timeout=10)
    assert not cache.following


def test_nothing_is_served_once_the_followers_last_read_is_too_old() -> None:
    now = [100.0]
    cache = DocCache(clock=lambda: now[0])
    cache.follow_from(10)
    cache.fill(JOB, "acme", "{}", 10)
    now[0] += FOLLOW_STALE_SECONDS  # (the follower reads at least every second when healthy)
    assert cache.get(JOB, "acme") == "{}"
    now[0] += 0.1  # stuck, say waiting for a connection: the document may be out of date
    assert cache.get(JOB, "acme") is None
    cache.followed([], up_to=10)  # it read the log again
    assert cache.get(JOB, "acme") == "{}"
