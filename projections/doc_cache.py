"""`DocCache`: job status documents of the `job_status` view kept in memory by a process that
serves the API, so the common status read (`GET /v1/jobs/{id}`) needs no round trip to the
database; `DocFollower` keeps it true to the log.

Each document is kept with the view position it reflects: the end of the view batch that wrote
it (`commit`, in the process whose runner applied that batch), or the view's position read in
the same statement as the document (`fill`). Two rules keep it exact:
- the follower reads which jobs each new job event changed (ids only, `select_changed_after`)
  and drops a document older than that event (`followed`), whichever process wrote the event
  or applies the view;
- a document is only kept if the follower has seen no change to its job after the document's
  position (the jobs changed since `_watermark` are remembered; older than that, it is not
  kept), and never replaces one of a later position.

So a kept document is the job as of its own position and of everything the follower has seen
since: a read naming `min_position` is answered from memory only when one of the two reaches
it. What it can lag by is the follower's own lag behind the log (a NOTIFY away, or the
fallback poll when a NOTIFY was lost): in the process that applies the view, its own batches
publish their documents at commit, so there it never lags the view. When the follower cannot
read the log, nothing is kept and every read goes to the database until it has started again
from the log's head; and nothing is answered once its last read is `FOLLOW_STALE_SECONDS`
old (stuck, say, waiting for a connection).

Bounded: at most `size` documents (the least recently written dropped first) and
`changed_size` remembered changes. Thread-safe: the view's thread and the follower write,
the API's event loop reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from uuid import UUID

from storage.recorder import TopicNotifyingRecorder

log = logging.getLogger("jobledger.projections")

DOC_CACHE_SIZE = 4096  # documents (about 1 KB each)
CHANGED_SIZE = 20_000  # jobs whose latest change is remembered (about 150 bytes each)
FOLLOW_BATCH = 5000  # changes read at a time
FOLLOW_POLL_SECONDS = 1.0  # when no wake-up comes (a lost NOTIFY)
# Nothing is answered from memory once the follower's last read of the log is older than this
# (it reads at least every `FOLLOW_POLL_SECONDS`): a follower stuck waiting for a connection
# would otherwise let documents go on being served however long it stays stuck.
FOLLOW_STALE_SECONDS = 3.0
# Reads of the log at most this often: wake-ups come with every save (a lone API process
# saving 1,500 jobs/s in rounds woke it about 150 times a second, twice a round: its own
# save, then its NOTIFY), and each read costs the process a round trip's CPU. Every 20 ms
# still cost a lone API process about 3% more CPU per create; every 50 ms is within the noise.
FOLLOW_INTERVAL_SECONDS = 0.05


class DocCache:
    def __init__(
        self,
        size: int = DOC_CACHE_SIZE,
        changed_size: int = CHANGED_SIZE,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.changed_size = changed_size
        self.hits = 0
        self.misses = 0
        # job id -> (tenant, document, the view position it reflects)
        self._docs: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
        self._staged: list[tuple[str, str, str]] = []  # (job id, tenant, doc) of the open batch
        self._changed: OrderedDict[str, int] = OrderedDict()  # job id -> its latest change seen
        self._followed: int | None = None  # every change up to here seen (None: not following)
        self._watermark = 0  # changes at or below it may be forgotten
        self._read_at = 0.0  # the follower's last read of the log (`clock`)
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def following(self) -> bool:
        return self._followed is not None

    def get(
        self, job_id: UUID, tenant_id: str | None, min_position: int | None = None
    ) -> str | None:
        """The job's status document, or None: read the database (not kept, another tenant's
        job, or not known to reflect `min_position`)."""
        with self._lock:
            found = self._docs.get(str(job_id))
            followed = self._followed
            read_at = self._read_at
        if (
            found is None
            or followed is None
            or self._clock() - read_at > FOLLOW_STALE_SECONDS
            or (tenant_id is not None and found[0] != tenant_id)
            or (min_position and min_position > max(found[2], followed))
        ):
            self.misses += 1
            return None
        self.hits += 1
        return found[1]

    def fill(self, job_id: UUID, tenant_id: str, doc: str, position: int) -> None:
        """Keep a document read from the view as of view `position` (the tracking position read
        in the same statement)."""
        with self._lock:
            self._keep(str(job_id), tenant_id, doc, position)

    # -- the view's side (the process whose runner applies it) --

    def stage(self, job_id: str, tenant_id: str, doc: str) -> None:
        """A document written in the view's open transaction (`commit` keeps it)."""
        self._staged.append((job_id, tenant_id, doc))

    def commit(self, position: int) -> None:
        """The view's transaction committed up to `position`: its documents are the view's."""
        staged, self._staged = self._staged, []
        with self._lock:
            for job_id, tenant_id, doc in staged:
                self._keep(job_id, tenant_id, doc, position)

    def abandon(self) -> None:
        """The view's batch was rolled back: its documents never were the view's."""
        self._staged = []

    # -- the follower's side --

    def follow_from(self, position: int) -> None:
        """(Re)start following at log `position`: what came before is not known, so start
        empty and keep only documents of at least that position."""
        with self._lock:
            self._docs.clear()
            self._changed.clear()
            self._followed = self._watermark = position
            self._read_at = self._clock()

    def followed(self, changes: Sequence[tuple[int, str]], up_to: int) -> None:
        """The follower saw `changes` ((log position, job id), in log order) and every other
        job event up to `up_to`."""
        with self._lock:
            docs, changed = self._docs, self._changed
            for position, job_id in changes:
                kept = docs.get(job_id)
                if kept is not None and kept[2] < position:
                    del docs[job_id]
                changed[job_id] = position
                changed.move_to_end(job_id)
            while len(changed) > self.changed_size:
                _, forgotten = changed.popitem(last=False)
                self._watermark = max(self._watermark, forgotten)
            if self._followed is not None:
                self._followed = max(self._followed, up_to)
            self._read_at = self._clock()

    def stop_following(self) -> None:
        """The log cannot be read: keep nothing until `follow_from` again."""
        with self._lock:
            self._followed = None
            self._docs.clear()
            self._changed.clear()

    def __len__(self) -> int:
        return len(self._docs)

    def _keep(self, job_id: str, tenant_id: str, doc: str, position: int) -> None:
        if self._followed is None or position < self._watermark:
            return  # changes after it may have gone unseen
        if self._changed.get(job_id, 0) > position:
            return  # the job changed since: the view has not applied that yet
        kept = self._docs.get(job_id)
        if kept is not None and kept[2] > position:
            return
        docs = self._docs
        docs[job_id] = (tenant_id, doc, position)
        docs.move_to_end(job_id)
        if len(docs) > self.size:
            docs.popitem(last=False)


class DocFollower:
    """Reads, from the log, which jobs each new job event changed, and tells `docs`
    (`DocCache.followed`). Woken by `wake` (the read models' group passes on every write it is
    told of: this process's saves and, through its LISTEN, others'), at most every
    `FOLLOW_INTERVAL_SECONDS`; polls every `poll_seconds` besides. Runs in its own thread
    (`run`) until `stop` is set."""

    def __init__(
        self,
        recorder: TopicNotifyingRecorder,
        docs: DocCache,
        topics: frozenset[str],
        *,
        poll_seconds: float = FOLLOW_POLL_SECONDS,
    ) -> None:
        self.recorder = recorder
        self.docs = docs
        self.topics = topics
        self._topic_list = sorted(topics)
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()

    def wake(self, topics: frozenset[str] | None = None) -> None:
        if topics is None or not topics.isdisjoint(self.topics):
            self._wake.set()

    def run(self, stop: threading.Event) -> None:
        position: int | None = None
        while not stop.is_set():
            stop.wait(FOLLOW_INTERVAL_SECONDS)  # (wake-ups meanwhile are read together)
            self._wake.clear()  # a write from here on makes the next wait return
            try:
                if position is None:
                    position = self.recorder.max_notification_id() or 0
                    self.docs.follow_from(position)
                head, changes = self.recorder.select_changed_after(
                    position, FOLLOW_BATCH, self._topic_list
                )
                up_to = changes[-1][0] if len(changes) >= FOLLOW_BATCH else max(head, position)
                self.docs.followed([(at, str(job)) for at, job in changes], up_to)
                position = up_to
                if len(changes) >= FOLLOW_BATCH:
                    continue
            except Exception as error:
                if position is not None:
                    log.warning("status documents: the log cannot be read (%s); none kept", error)
                self.docs.stop_following()
                position = None
            self._wake.wait(self.poll_seconds)
        self.docs.stop_following()
