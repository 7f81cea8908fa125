"""`ProjectionRunner`: follows the ledger's notification log and keeps one projection's rows in
step with it.

Each batch (up to `batch_size` events of interest) is applied in ONE transaction together with the
projection's tracking position, which is advanced with a compare-and-set
(`UPDATE ... WHERE position = <what we read>`). So a crash anywhere leaves rows and position
consistent (nothing applied twice, nothing skipped), and a second runner of the same projection
cannot interleave: its compare-and-set fails and its transaction rolls back (`LostOwnership`).
On PostgreSQL the runners of one projection also elect a single owner with an advisory lock, so
a standby simply waits. Events a projection does not care about still advance its position.

A batch is read with the projection's topics as a filter in the store (`topic IN (...)`) up to
the log's head, read by the same statement: a view of jobs never fetches or decodes the webhook
deliveries' events (most of the log: each job's change makes one delivery and one attempt per
subscribed endpoint). Reading up to a head is safe because the recorders commit notification
ids in order (PostgreSQL inserts take an EXCLUSIVE table lock; SQLite has one writer): no id at
or below the head can still appear.

Wake-ups: the ledger calls `notify()` after every save in this process; on PostgreSQL a
LISTEN connection on the ledger's NOTIFY channel wakes runners in other processes. Both say
which topics were written (`storage.recorder`): a runner wakes at once only for its own, and
moves its position over the rest at most every `pass_over_seconds` (one read for a burst of
them, so its lag behind the head stays small). A slow fallback poll (`poll_seconds`) covers
anything missed.

This module must never import the web layer or the delivery package.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from ledger.application import JobLedger
from ledger.errors import StoreUnavailable
from storage.recorder import TopicNotifyingRecorder, written_topics
from storage.sql import SqlStore, Tx, utc_text

log = logging.getLogger("jobledger.projections")

TRACKING_TABLE = "projection_tracking"
MAX_WAIT_SECONDS = 60.0  # a group with nothing to run still looks at its stop flag


class LostOwnership(RuntimeError):
    """Another runner advanced this projection first; this batch was rolled back."""


class Projection(Protocol):
    name: str
    topics: frozenset[str]

    def create_tables(self, tx: Tx) -> None: ...
    def drop_tables(self, tx: Tx) -> None: ...
    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None: ...
    def forget(self) -> None:
        """Drop in-memory caches (after a rolled-back batch)."""


class LogReader(Protocol):
    """`storage.recorder`'s recorders: the head and what follows `start`, in one read."""

    def select_after(
        self, start: int, limit: int, topics: Sequence[str] = ()
    ) -> tuple[int, Sequence[Any]]: ...


def create_tracking_table(tx: Tx) -> None:
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
        "name TEXT PRIMARY KEY, position BIGINT NOT NULL, updated_at TEXT NOT NULL)"
    )


def tracked_position(store: SqlStore, name: str) -> tuple[int, str | None]:
    with store.reading() as tx:
        row = tx.execute(
            f"SELECT position, updated_at FROM {TRACKING_TABLE} WHERE name = ?", (name,)
        ).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def advisory_key(schema: str, name: str) -> int:
    digest = hashlib.sha256(f"projection:{schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ProjectionRunner:
    def __init__(
        self,
        ledger: JobLedger,
        store: SqlStore,
        projection: Projection,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        pass_over_seconds: float = 0.1,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.pass_over_seconds = pass_over_seconds
        self._wake = threading.Event()
        self._passed_over = False  # others' topics were written since the last read
        self._pass_over_at = 0.0  # not before then (monotonic): at most one such read a period
        self._signal: threading.Event | None = None  # its group's, set with `_wake`
        self._next_poll = 0.0
        self._position: int | None = None
        self._topic_set = frozenset(projection.topics)
        self.position_changed: list[Callable[[int], None]] = []

    @property
    def name(self) -> str:
        return self.projection.name

    # -- set-up --

    def setup(self) -> None:
        with self.store.transaction() as tx:
            create_tracking_table(tx)
            self.projection.create_tables(tx)
            # Read first: the insert would wait for a running owner's uncommitted batch.
            name = self.projection.name
            if tx.execute(f"SELECT 1 FROM {TRACKING_TABLE} WHERE name = ?", (name,)).fetchone():
                return
            tx.execute(
                f"INSERT INTO {TRACKING_TABLE} (name, position, updated_at) VALUES (?, 0, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, utc_text(datetime.now(UTC))),
            )

    # -- running --

    def notify(self, position: int = 0, topics: frozenset[str] | None = None) -> None:
        """Something was written (`topics`; None: unknown): wake now if it concerns this
        projection, else within `pass_over_seconds`."""
        if topics is None or not topics.isdisjoint(self._topic_set):
            self._wake.set()
        else:
            self._passed_over = True
        if self._signal is not None:
            self._signal.set()

    def position(self) -> int:
        return tracked_position(self.store, self.projection.name)[0]

    def run_once(self, decoded: dict[int, Any] | None = None) -> int:
        """Apply the next batch; returns how many log entries it covered (0: caught up).
        `decoded`: see `_read_log`."""
        start = self._position if self._position is not None else self.position()
        batch = self._read(start, decoded)
        if batch is None:
            self._position = start
            return 0
        self._apply(batch)
        return batch.entries

    def _read(self, start: int, decoded: dict[int, Any] | None = None) -> _Batch | None:
        """The next `batch_size` events of interest after `start`, decoded; the batch ends at
        the last of them, or at the head when fewer were left (None: nothing new at all)."""
        return _read_log(self.ledger, start, [self], decoded).get(id(self))

    def _apply(self, batch: _Batch) -> None:
        """Apply `batch` and move the position from where it was read to its end, in one
        transaction."""
        _apply_together([(self, batch)])

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply batches until the log's end as it was when called; returns entries applied.

        With more than one batch to go, the next batch is read and decoded in a thread while
        the current one is written (the two overlap their waits on the database)."""
        target = self.ledger.recorder.max_notification_id() or 0
        start = self._position if self._position is not None else self.position()
        done = 0
        if target - start > self.batch_size:
            with _ReadAhead(self._read, start, target) as batches:
                for batch in batches:
                    self._apply(batch)
                    start = batch.end
                    done += batch.entries
                    if progress is not None:
                        progress(start, target)
        while True:
            applied = self.run_once()
            done += applied
            if progress is not None and self._position is not None:
                progress(self._position, target)
            if applied == 0 or (self._position or 0) >= target:
                return done

    def run_forever(self, stop: threading.Event, *, listen: bool = True) -> None:
        """Follow the log until `stop` is set; on PostgreSQL only while owning the projection.

        `listen=False` when the caller wakes it itself (`notify`). Several runners of one
        process share one thread with `RunnerGroup`."""
        RunnerGroup([self]).run(stop, listen=listen)

    def _due(self, now: float) -> bool:
        """Woken for its topics, or others' were written and its last read is at least
        `pass_over_seconds` old (not with every wake of its group: at 10 jobs/s that was a
        read and a transaction per view and write, a tenth of a delivery process's CPU)."""
        return self._wake.is_set() or (self._passed_over and now >= self._pass_over_at)

    def _reading(self, now: float) -> None:
        """It reads next (its group calls it): that read covers every write notified so far,
        and the next one only for others' writes waits a period."""
        self._wake.clear()
        self._passed_over = False
        self._next_poll = now + self.poll_seconds
        self._pass_over_at = now + self.pass_over_seconds


class RunnerGroup:
    """Follows the log for several projections in ONE thread: each wake-up runs the runners it
    concerns, one batch each per round, so a long catch-up of one delays the others by one
    batch at most. Runners ahead in the order come first: when one of them is woken during a
    round, the round stops after the current batch and starts again from the top (a runner
    gives way so at most once in a row, so none is starved by a steady stream of writes for
    those ahead of it). One thread instead of one per projection: with six projections each in its
    own thread, a delivery process at 100 jobs/s spent half its CPU in the kernel handing the
    GIL between them (context switches, futex waits); one thread cut its CPU per job by a fifth
    and halved the commit-to-webhook p99 (docs/performance.md).

    On PostgreSQL each runner still owns its projection through its own advisory lock: the
    group takes the locks it can and stands by for the others (looked at every
    `OWNERSHIP_CHECK_SECONDS`), and drops a runner whose lock went with its connection.
    `runners` are run in the order given (a follower that makes events first).

    The runners of a round that stand at the same position share one read of the log and
    apply their batches in ONE transaction (`_apply_together`; on failure, each alone). The
    events a round decodes are kept until the next round, by log position: the fan-out
    reads alone, then the views read the same job events, which are not decoded a second
    time. A lone API process under creates used 0.48-0.56 ms of CPU per create with that
    against 0.56-0.61 ms without (3 runs of 10,000 creates each way, in turns)."""

    OWNERSHIP_CHECK_SECONDS = 2.0

    def __init__(self, runners: Sequence[ProjectionRunner]) -> None:
        self.runners = list(runners)
        # Told of every write as the runners are (this process's saves, and others' through
        # the group's LISTEN): followers of the log that are not runners (`DocFollower`).
        self.also_notify: list[Callable[[frozenset[str] | None], None]] = []
        self._signal = threading.Event()
        self._decoded: dict[int, Any] = {}
        for runner in self.runners:
            runner._signal = self._signal

    def notify(self, position: int = 0, topics: frozenset[str] | None = None) -> None:
        """Something was written (`topics`; None: unknown): wake the runners it concerns."""
        for runner in self.runners:
            runner.notify(position, topics)
        for wake in self.also_notify:
            wake(topics)

    def run(self, stop: threading.Event, *, listen: bool = True) -> None:
        """Follow until `stop` is set (`listen`: on PostgreSQL, with a LISTEN connection of
        its own)."""
        recorder = self.runners[0].ledger.recorder if self.runners else None
        listener = (
            LogListener(
                self.runners[0].store,
                recorder.channel_name,
                lambda topics: self.notify(0, topics),
                stop,
            )
            if listen and isinstance(recorder, TopicNotifyingRecorder)
            else None
        )
        if listener is not None:
            listener.start()
        owners = {id(r): _Ownership(r.store, r.projection.name) for r in self.runners}
        owned: list[ProjectionRunner] = []
        checked = float("-inf")
        retry_at: dict[int, float] = {}
        more: set[int] = set()
        yielded: set[int] = set()  # runners that gave way last round: not again this one
        left: dict[int, _Batch] = {}  # the batches they had been read
        try:
            while not stop.is_set():
                if time.monotonic() - checked >= self.OWNERSHIP_CHECK_SECONDS:
                    checked = time.monotonic()
                    owned = self._owned(owners, owned)
                self._signal.clear()  # a notify from here on makes the next wait return
                self._decoded.clear()
                polled = time.monotonic()
                due = []
                for runner in owned:
                    if retry_at.get(id(runner), 0.0) > polled:
                        continue
                    woken = runner._due(polled)
                    if woken or id(runner) in more or polled >= runner._next_poll:
                        runner._reading(polled)
                        more.discard(id(runner))
                        due.append(runner)
                # a batch read for a runner that then gave way is still its next one (not read
                # and decoded again) while the runner stands where it was read from
                read: dict[int, _Batch | None] = {
                    id(r): left[id(r)]
                    for r in due
                    if id(r) in left and left[id(r)].start == r._position
                }
                carried = set(read)  # read before the writes that woke this round: read on
                left = {}
                gave_way = yielded
                yielded = set()
                # batches read, applied together when the next runner must run alone (it
                # makes events, or gives way to one) or at the round's end
                ready: list[tuple[ProjectionRunner, _Batch]] = []
                for index, runner in enumerate(due):
                    if (
                        index
                        and id(runner) not in gave_way
                        and _woken_before(runner, owned, retry_at, polled)
                    ):
                        # new work for a runner ahead of it (the webhook path comes first):
                        # that goes first, and the rest of this round right after it
                        yielded = {id(r) for r in due[index:]}
                        more.update(yielded)
                        left = {k: b for k in yielded if (b := read.get(k)) is not None}
                        break
                    if id(runner) not in read and not _makes_events(runner):
                        # read now, after the runners before it wrote (the fan-out's
                        # deliveries reach the delivery queue in the same round)
                        unread = [r for r in due[index:] if id(r) not in read]
                        read.update(self._read_together(unread, retry_at))
                    if retry_at.get(id(runner), 0.0) > polled:
                        continue  # the read for it failed
                    if id(runner) in read:
                        batch = read[id(runner)]
                        if batch is not None:
                            ready.append((runner, batch))
                        continue
                    self._apply_ready(ready, carried, more, retry_at)
                    ready = []
                    self._attempt(runner, None, carried, more, retry_at)
                self._apply_ready(ready, carried, more, retry_at)
                if more and not stop.is_set():
                    continue
                self._signal.wait(self._wait_seconds(owned, retry_at))
        finally:
            for ownership in owners.values():
                ownership.release()
            if listener is not None:
                listener.join(timeout=5)

    def _apply_ready(
        self,
        ready: Sequence[tuple[ProjectionRunner, _Batch]],
        carried: set[int],
        more: set[int],
        retry_at: dict[int, float],
    ) -> None:
        """Apply the batches read for these runners in one transaction (`_apply_together`);
        when that fails, each on its own, so only a failing one waits to retry."""
        if len(ready) > 1 and len({id(runner.store) for runner, _ in ready}) == 1:
            try:
                _apply_together(ready)
            except Exception:
                log.debug("projections: the batches applied together failed; each alone")
            else:
                for runner, batch in ready:
                    if batch.entries >= runner.batch_size or id(runner) in carried:
                        more.add(id(runner))
                return
        for runner, batch in ready:
            self._attempt(runner, batch, carried, more, retry_at)

    def _attempt(
        self,
        runner: ProjectionRunner,
        batch: _Batch | None,
        carried: set[int],
        more: set[int],
        retry_at: dict[int, float],
    ) -> None:
        """Apply `batch` (None: read one and apply it) and note what comes of it."""
        try:
            if batch is not None:
                runner._apply(batch)
                applied = batch.entries
            else:
                applied = runner.run_once(self._decoded)
            if applied >= runner.batch_size or id(runner) in carried:
                more.add(id(runner))
        except LostOwnership:
            log.warning("projection %s: another runner moved first", runner.name)
            more.add(id(runner))
        except StoreUnavailable:
            log.warning("projection %s: store unavailable; retrying", runner.name)
            retry_at[id(runner)] = time.monotonic() + runner.poll_seconds
        except Exception:
            log.exception("projection %s: batch failed; retrying", runner.name)
            retry_at[id(runner)] = time.monotonic() + runner.poll_seconds

    def _read_together(
        self, due: list[ProjectionRunner], retry_at: dict[int, float]
    ) -> dict[int, _Batch | None]:
        """One read of the log for the due runners that stand at the same position (the usual
        case: they follow the same head), each given the events of its own topics (None:
        nothing new). Runners elsewhere, and followers that make events, read alone."""
        at: dict[int, list[ProjectionRunner]] = {}
        for runner in due:
            if runner._position is not None and not _makes_events(runner):
                at.setdefault(runner._position, []).append(runner)
        batches: dict[int, _Batch | None] = {}
        for start, runners in at.items():
            if len(runners) < 2:
                continue
            try:
                read = _read_log(runners[0].ledger, start, runners, self._decoded)
            except Exception as error:  # each is retried after its poll period
                log.warning("projections: the log could not be read: %s; retrying", error)
                for runner in runners:
                    retry_at[id(runner)] = time.monotonic() + runner.poll_seconds
                continue
            for runner in runners:
                batches[id(runner)] = read.get(id(runner))
        return batches

    def _owned(
        self, owners: dict[int, _Ownership], owned: list[ProjectionRunner]
    ) -> list[ProjectionRunner]:
        """The runners whose projections this group owns now, in order: locks taken where
        free, runners whose lock is gone dropped (another process may run them now)."""
        now_owned = []
        for runner in self.runners:
            ownership = owners[id(runner)]
            if runner in owned and ownership.lost():
                log.warning("projection %s: lost its advisory lock; standing by", runner.name)
                ownership.release()
                runner._position = None
                runner.projection.forget()
            elif runner in owned or ownership.try_acquire():
                now_owned.append(runner)
        return now_owned

    def _wait_seconds(self, owned: list[ProjectionRunner], retry_at: dict[int, float]) -> float:
        """Until the next wake-up at the latest: a pass over others' writes, a retry, the
        fallback poll, or the next look at the ownership of projections run elsewhere."""
        now = time.monotonic()
        wait = self.OWNERSHIP_CHECK_SECONDS if len(owned) < len(self.runners) else float("inf")
        for runner in owned:
            wait = min(wait, runner._next_poll - now)
            if runner._passed_over and retry_at.get(id(runner), 0.0) <= now:
                # (one waiting to retry reads at its retry, which counts below)
                wait = min(wait, runner._pass_over_at - now)
        wait = min([wait, MAX_WAIT_SECONDS, *(at - now for at in retry_at.values() if at > now)])
        return max(wait, 0.0)


def _woken_before(
    runner: ProjectionRunner,
    owned: Sequence[ProjectionRunner],
    retry_at: dict[int, float],
    now: float,
) -> bool:
    """Whether a runner ahead of `runner` in its group was woken for its own topics since
    the round began (one waiting to retry a failure does not count: it would not run)."""
    for ahead in owned:
        if ahead is runner:
            return False
        if ahead._wake.is_set() and retry_at.get(id(ahead), 0.0) <= now:
            return True
    return False


def _apply_together(ready: Sequence[tuple[ProjectionRunner, _Batch]]) -> None:
    """Apply each runner's batch and move each one's position from where its batch was read to
    its end, all in ONE transaction of their (shared) store: a round of a lone API process's
    views took a transaction each, and their statements were most of its views' CPU."""
    store = ready[0][0].store
    try:
        for runner, batch in ready:
            prepare = getattr(runner.projection, "prepare", None)
            if prepare is not None:  # work outside the views' transaction (see DeliveryFanout)
                prepare(store, batch.events)
        with store.transaction() as tx:
            _move_positions(tx, [(r.projection.name, b.start, b.end) for r, b in ready])
            for runner, batch in ready:
                runner.projection.apply(tx, batch.events)
    except BaseException:
        for runner, _ in ready:
            runner._position = None
            runner.projection.forget()
        raise
    for runner, batch in ready:
        runner._position = batch.end
        for callback in runner.position_changed:
            callback(batch.end)


def _move_positions(tx: Tx, moves: Sequence[tuple[str, int, int]]) -> None:
    """Compare-and-set each projection's position (name, from, to); LostOwnership names the
    ones that stood elsewhere. On PostgreSQL one statement for them all."""
    now = utc_text(datetime.now(UTC))
    if len(moves) == 1 or not tx.is_postgres:
        for name, start, end in moves:
            moved = tx.execute(
                f"UPDATE {TRACKING_TABLE} SET position = ?, updated_at = ? "
                "WHERE name = ? AND position = ?",
                (end, now, name, start),
            )
            if moved.rowcount != 1:
                raise LostOwnership(name)
        return
    values = ", ".join("(?, ?::bigint, ?::bigint)" for _ in moves)
    moved = tx.execute(
        f"UPDATE {TRACKING_TABLE} AS t SET position = v.end_position, updated_at = ? "
        f"FROM (VALUES {values}) AS v(name, start_position, end_position) "
        "WHERE t.name = v.name AND t.position = v.start_position RETURNING t.name",
        [now, *(value for move in moves for value in move)],
    )
    names = {row[0] for row in moved.fetchall()}
    lost = [name for name, _, _ in moves if name not in names]
    if lost:
        raise LostOwnership(", ".join(lost))


def _makes_events(runner: ProjectionRunner) -> bool:
    """A follower that writes to the ledger (the webhook fan-out) reads alone and first."""
    return bool(getattr(runner.projection, "makes_events", False))


@dataclass(frozen=True)
class _Batch:
    start: int  # the position it was read after
    end: int  # the position of its last log entry
    entries: int  # log positions covered, of any topic (read or filtered out)
    events: list[tuple[int, Any]]  # (position, event) of those the projection wants


def _read_log(
    ledger: JobLedger,
    start: int,
    runners: Sequence[ProjectionRunner],
    decoded: dict[int, Any] | None = None,
) -> dict[int, _Batch]:
    """One read of the log after `start` for `runners` (by `id`; none when nothing is new):
    the events of any of their topics, decoded once, up to the smallest batch size; each
    runner gets those of its own topics. All batches end at the same place: the last event
    read when the read was full (the next read goes on from there), else the head as that read
    saw it (`select_after`: one statement), so a batch covers every event of its runner's
    topics in (start, end].

    `decoded`: events already decoded, by log position, taken from there instead of decoded
    again, and the ones decoded here added (a group's round: the fan-out reads alone, then the
    views read the same job events; domain events are immutable, so they can be shared)."""
    limit = min(r.batch_size for r in runners)
    topics = sorted(set().union(*(r._topic_set for r in runners)))
    reader = cast(LogReader, ledger.recorder)  # (both of the stores' recorders are)
    head, notes = reader.select_after(start, limit, topics)
    if head <= start:
        return {}
    end = notes[-1].id if len(notes) >= limit else head
    decode = ledger.mapper.to_domain_event
    if decoded is None:
        events = [(n.id, n.topic, decode(n)) for n in notes]
    else:
        events = []
        for n in notes:
            event = decoded.get(n.id)
            if event is None:
                event = decoded[n.id] = decode(n)
            events.append((n.id, n.topic, event))
    return {
        id(r): _Batch(start, end, end - start, [(i, e) for i, t, e in events if t in r._topic_set])
        for r in runners
    }


class _ReadAhead:
    """Reads batches after `start` up to `target` in a thread, one batch ahead of the caller;
    an error there is raised in the caller. Leaving the `with` block stops the thread."""

    def __init__(self, read: Callable[[int], _Batch | None], start: int, target: int) -> None:
        self.read = read
        self.start = start
        self.target = target
        self.ready: queue.Queue[_Batch | BaseException | None] = queue.Queue(maxsize=1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="projection-read", daemon=True)

    def __enter__(self) -> Iterator[_Batch]:
        self.thread.start()
        return self._batches()

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        with contextlib.suppress(queue.Empty):
            self.ready.get_nowait()  # unblock a pending put
        self.thread.join()

    def _batches(self) -> Iterator[_Batch]:
        while True:
            item = self.ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        position = self.start
        item: _Batch | BaseException | None
        while True:
            try:
                item = self.read(position) if position < self.target else None
            except BaseException as error:  # handed to the caller
                item = error
            while not self.stopped.is_set():
                try:
                    self.ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, _Batch) or self.stopped.is_set():
                return
            position = item.end


class _Ownership:
    """PostgreSQL: an advisory lock for one projection, held on a connection of its own while
    this process runs it (SQLite: one machine, always owned)."""

    def __init__(self, store: SqlStore, name: str) -> None:
        self.store = store
        self.name = name
        self.key = advisory_key(store.database.schema, name)
        self.conn: Any = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (False: another process runs the projection, or the
        store did not answer)."""
        if not self.store.is_postgres:
            return True
        if self.conn is not None:
            return True
        try:
            conn = self.store.database.connect()
        except Exception as error:
            log.warning("projection %s: cannot reach PostgreSQL: %s", self.name, error)
            return False
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except Exception as error:
            log.warning("projection %s: cannot take its lock: %s", self.name, error)
            got = None
        if got and got[0]:
            self.conn = conn
            return True
        with contextlib.suppress(Exception):
            conn.close()
        return False

    def lost(self) -> bool:
        """Whether the lock's connection is gone (a store restart or pg_terminate_backend
        released the lock; another process may hold it now)."""
        if self.conn is None:
            return self.store.is_postgres
        try:
            self.conn.execute("SELECT 1")
        except Exception:
            return True
        return False

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already gone is fine too
                self.conn.close()  # releases the advisory lock
            self.conn = None


class LogListener(threading.Thread):
    """LISTEN on the ledger's NOTIFY channel (`channel`: its recorder's `channel_name`) so
    saves in other processes wake runners (one connection per process is enough: `wake` is
    called with the topics each write names, or None when its NOTIFY does not say)."""

    STOP_CHECK_SECONDS = 0.1  # how soon a stop is noticed (psycopg cannot interrupt notifies)

    def __init__(
        self,
        store: SqlStore,
        channel: str,
        wake: Callable[[frozenset[str] | None], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name="projection-listen", daemon=True)
        self.store = store
        self.channel = channel
        self.wake = wake
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = self.store.database.connect()
                with conn:
                    conn.execute(f"LISTEN {self.channel}")  # (needs no quotes: see notify_channel)
                    while not self.stop.is_set():
                        for notify in conn.notifies(timeout=self.STOP_CHECK_SECONDS):
                            self.wake(written_topics(notify.payload))
            except Exception:
                log.warning("projection listener lost its connection; reconnecting")
                self.stop.wait(1.0)


def rebuild(
    ledger: JobLedger,
    store: SqlStore,
    live: Projection,
    shadow: Projection,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 2000,
) -> int:
    """Rebuild `live` from an empty view: fill `shadow` from the start of the log, then, in one
    transaction, drop the live tables, rename the shadow's into their place and set the live
    position to the shadow's. A live runner meanwhile loses its compare-and-set once, re-reads
    the position and carries on from there.

    The shadow is filled without its secondary indexes (only the keys its upserts need); they
    are built once over the full tables: on PostgreSQL before the swap, which then only renames
    (so readers wait for no index build); on SQLite, where WAL readers never wait, in the swap.
    Returns the position the rebuilt view stands at."""
    with store.transaction() as tx:
        shadow.drop_tables(tx)
        create_tracking_table(tx)
        tx.execute(f"DELETE FROM {TRACKING_TABLE} WHERE name = ?", (shadow.name,))
    runner = ProjectionRunner(ledger, store, shadow, batch_size=batch_size)
    runner.setup()
    definitions: list[str] = []  # PostgreSQL: the CREATE INDEX of each one dropped
    with store.transaction() as tx:
        for table in _tables(shadow):
            for index, _ in _indexes(tx, table, unique=False):
                if tx.is_postgres:
                    found = tx.execute("SELECT pg_get_indexdef(to_regclass(?))", (index,))
                    definitions.append(str(found.fetchone()[0]))
                tx.execute(f"DROP INDEX {index}")
    with _collecting_rarely():
        runner.catch_up(progress)
    position = runner.position()
    if store.is_postgres:  # build the indexes now: readers of the live tables then wait
        build_indexes(store, definitions)  # (DROP TABLE locks them) for renames alone
        with store.transaction() as tx:
            shadow.create_tables(tx)  # (all there: nothing left to make)
    with store.transaction() as tx:
        for live_table, shadow_table in zip(_tables(live), _tables(shadow), strict=True):
            tx.execute(f"DROP TABLE IF EXISTS {live_table}")
            tx.execute(f"ALTER TABLE {shadow_table} RENAME TO {live_table}")
            _rename_indexes(tx, live_table, shadow_table)
        live.create_tables(tx)
        now = utc_text(datetime.now(UTC))
        tx.execute(
            f"INSERT INTO {TRACKING_TABLE} (name, position, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
            "updated_at = excluded.updated_at",
            (live.name, position, now),
        )
        tx.execute(f"DELETE FROM {TRACKING_TABLE} WHERE name = ?", (shadow.name,))
    live.forget()
    return position


def build_indexes(store: SqlStore, definitions: Sequence[str]) -> None:
    """Run these CREATE INDEX statements, `INDEX_BUILDS` at a time, each on a connection of
    its own (the server builds them side by side; this process only waits). One after the
    other in one transaction, `job_status`'s seven took 0.45-0.55 s of a 35,000-event
    rebuild on a 2-core machine, during which nothing else ran."""
    if not definitions:
        return

    def build(definition: str) -> None:
        with store.connection() as raw:
            raw.execute(definition)

    with concurrent.futures.ThreadPoolExecutor(
        min(INDEX_BUILDS, len(definitions)), thread_name_prefix="rebuild-index"
    ) as pool:
        for done in [pool.submit(build, d) for d in definitions]:
            done.result()  # the first failure is raised (the rest were waited for)


# Index builds at once in a rebuild: the server's cores, on the 2-core machines measured.
INDEX_BUILDS = 2


# Allocations between young-generation collections while a rebuild catches up: more than a
# batch makes (2,000 events decoded, ~60 objects each), so a batch being read or applied is not
# walked by one collection after another and then promoted for the older generations to walk
# again. Python's default (700) cost a rebuild 15-20 % of its time (issue 8's figure 5).
REBUILD_GC_THRESHOLD = 200_000


@contextlib.contextmanager
def _collecting_rarely() -> Iterator[None]:
    """Young collections every `REBUILD_GC_THRESHOLD` allocations meanwhile (the process's
    own setting again afterwards)."""
    before = gc.get_threshold()
    gc.set_threshold(REBUILD_GC_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _tables(projection: Projection) -> tuple[str, ...]:
    tables = getattr(projection, "tables", None)
    return tuple(tables) if tables else (str(getattr(projection, "table", projection.name)),)


def _indexes(tx: Tx, table: str, *, unique: bool | None = None) -> list[tuple[str, bool]]:
    """(name, is_unique) of the indexes made by CREATE [UNIQUE] INDEX on `table`; on
    PostgreSQL also those behind its primary key and unique constraints (SQLite's are
    automatic and follow the table). `unique` keeps only those of that kind."""
    if tx.is_postgres:
        found = [
            (str(name), bool(is_unique))
            for name, is_unique in tx.execute(
                "SELECT c.relname, x.indisunique FROM pg_index x "
                "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = to_regclass(?)",
                (table,),
            ).fetchall()
        ]
    else:
        found = [
            (str(name), str(sql).upper().startswith("CREATE UNIQUE"))
            for name, sql in tx.execute(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (table,),
            ).fetchall()
        ]
    return [(name, u) for name, u in found if unique is None or u == unique]


def _rename_indexes(tx: Tx, live_table: str, shadow_table: str) -> None:
    """After `shadow_table` was renamed to `live_table`: give its remaining indexes the live
    names (PostgreSQL), or drop them for `create_tables` to make again (SQLite has no
    ALTER INDEX; only unique indexes can be left, and they are rebuilt like the others)."""
    for index, _ in _indexes(tx, live_table):
        if not index.startswith(shadow_table):
            continue
        if tx.is_postgres:
            tx.execute(f"ALTER INDEX {index} RENAME TO {live_table}{index[len(shadow_table) :]}")
        else:
            tx.execute(f"DROP INDEX {index}")


class PositionWaiter:
    """Lets a reader wait (bounded) until a projection has applied a given log position:
    read-your-writes for a client that just wrote. Fed by `ProjectionRunner.position_changed`
    in this process; falls back to reading the tracking row (another process's runner)."""

    def __init__(self, store: SqlStore, name: str, *, poll_seconds: float = 0.02) -> None:
        self.store = store
        self.name = name
        self.poll_seconds = poll_seconds
        self._position = 0
        self._changed = threading.Condition()

    def advanced(self, position: int) -> None:
        with self._changed:
            if position > self._position:
                self._position = position
                self._changed.notify_all()

    def reached(self, position: int) -> bool:
        """Known (in this process) to have applied `position`, without asking the store."""
        with self._changed:
            return self._position >= position

    def wait(self, position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                if self._position >= position:
                    return True
            self.advanced(tracked_position(self.store, self.name)[0])
            remaining = deadline - time.monotonic()
            if self._position >= position:
                return True
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, self.poll_seconds * 10))
