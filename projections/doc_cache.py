"""`DocCache`: the latest status documents of the `job_status` view, kept in memory by the
process that writes the view, so the common status read (`GET /v1/jobs/{id}`) needs no round
trip to the database.

Why it is exact: only the view's owner writes its rows (`projections.runner`: an advisory lock
on PostgreSQL), and the owner passes every document it writes through here.
- `stage` takes each document the view writes in a batch; `commit`, called once the batch's
  transaction has committed (`ProjectionRunner.position_changed`, ahead of the read-your-writes
  waiter), publishes them; `abandon` drops them and everything kept when a batch fails or
  another runner moved first (`Projection.forget`).
- A document read from the database fills the cache (`fill`) only if no batch was published
  since the read began (`generation`): a read that raced a batch would otherwise put back
  the document that batch replaced.
- It answers only while this process owns the view (`set_owned`, from `RunnerGroup`'s ownership
  checks); standing by, or after losing the lock, it is empty and every read goes to the
  database. Between a lost lock and this process noticing it (`OWNERSHIP_CHECK_SECONDS`),
  a read without `min_position` may be that much older than the view; reads that name a
  position never are (the waiter stops advancing with the lost lock).

Bounded: at most `size` documents, the least recently written or filled dropped first.
Thread-safe: the view's thread writes, the API's event loop reads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from uuid import UUID

DOC_CACHE_SIZE = 4096  # documents (about 1 KB each)


class DocCache:
    def __init__(self, size: int = DOC_CACHE_SIZE) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._docs: OrderedDict[str, tuple[str, str]] = OrderedDict()  # job id -> (tenant, doc)
        self._staged: list[tuple[str, str, str]] = []  # (job id, tenant, doc) of the open batch
        self._owned = False
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Take it before reading a document from the database; give it to `fill`."""
        return self._generation

    def get(self, job_id: UUID, tenant_id: str | None) -> str | None:
        """The job's status document as the view holds it, or None: read the database (not
        kept, not owned, or another tenant's job)."""
        key = str(job_id)
        with self._lock:
            found = self._docs.get(key)
        if found is None or (tenant_id is not None and found[0] != tenant_id):
            self.misses += 1
            return None
        self.hits += 1
        return found[1]

    def fill(self, job_id: UUID, tenant_id: str, doc: str, generation: int) -> None:
        """Keep a document just read from the view, unless a batch was published since
        `generation` was taken (it may have replaced this document)."""
        with self._lock:
            if self._owned and generation == self._generation:
                self._put(str(job_id), tenant_id, doc)

    # -- the view's side --

    def stage(self, job_id: str, tenant_id: str, doc: str) -> None:
        """A document written in the view's open transaction (`commit` publishes it)."""
        self._staged.append((job_id, tenant_id, doc))

    def commit(self, position: int = 0) -> None:
        """The view's transaction committed: its documents are the view's now."""
        staged, self._staged = self._staged, []
        with self._lock:
            self._generation += 1
            if self._owned:
                for job_id, tenant_id, doc in staged:
                    self._put(job_id, tenant_id, doc)

    def abandon(self) -> None:
        """The view's batch was rolled back, or another runner moved first: keep nothing."""
        self._staged = []
        with self._lock:
            self._generation += 1
            self._docs.clear()

    @property
    def owned(self) -> bool:
        """Whether it answers: this process owns the view."""
        return self._owned

    def set_owned(self, owned: bool) -> None:
        """This process took (True) or lost (False) the view's lock: start empty either way."""
        with self._lock:
            self._owned = owned
            self._generation += 1
            self._docs.clear()

    def __len__(self) -> int:
        return len(self._docs)

    def _put(self, job_id: str, tenant_id: str, doc: str) -> None:
        docs = self._docs
        docs[job_id] = (tenant_id, doc)
        docs.move_to_end(job_id)
        if len(docs) > self.size:
            docs.popitem(last=False)
