"""The worker: turns queued jobs into publish attempts and records every outcome in the ledger.

Modules: `queue` (finding and claiming due work in the job-status projection), `scheduler`
(queued -> scheduled), `runner` (the claim loop, leases, reaping expired leases, graceful
shutdown), `pacing` (shared token buckets), `publishers` (sandbox and live Pinterest).

The worker changes jobs only through `ledger.application.JobLedger` commands; the ledger's
optimistic concurrency is what guarantees that one attempt is never run twice. This package must
never import the web layer (`api`, starlette) or the composition root (`jobledger`).
"""
