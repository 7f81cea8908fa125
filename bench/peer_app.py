"""The procrastinate app of figure 8: one no-op task, its tables in the schema named by
BENCH_PEER_SCHEMA (`search_path`), the database of LEDGER_BENCH_DATABASE_URL.
Its worker: `procrastinate --app=bench.peer_app.app worker`."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from bench.support import BASE_URL

app = App(
    connector=PsycopgConnector(
        conninfo=BASE_URL,
        kwargs={"options": f"-c search_path={os.environ.get('BENCH_PEER_SCHEMA', 'public')}"},
    )
)


@app.task(name="noop")  # type: ignore[untyped-decorator,misc,unused-ignore]
def noop(i: int) -> None:
    """Does nothing: what the queue itself costs."""
