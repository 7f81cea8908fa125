"""A serving process as `ledger serve` starts it (`start_serving_process`)."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from jobledger.serve import SERVING_GC_THRESHOLD, start_serving_process
from jobledger.settings import Settings


def test_what_start_up_made_is_out_of_the_collector_s_sight(tmp_path) -> None:
    """`gc.freeze()` after start-up: the objects made by then (modules, the read models, the
    pools) are not walked by every full collection of the serving process (in `make bench`
    that halved the create p99: 49-52 -> 23-25 ms)."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    threshold = gc.get_threshold()
    process = start_serving_process(
        Settings(database_url=f"sqlite:///{tmp_path}/ledger.db"), "projector"
    )
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        # and young collections every SERVING_GC_THRESHOLD allocations, not Python's 700
        assert gc.get_threshold() == (SERVING_GC_THRESHOLD, *threshold[1:])
    finally:
        process.close()
        gc.unfreeze()
        gc.set_threshold(*threshold)


HTTP_MODULES = ("api.app", "api.reads", "api.webhook_reads", "uvicorn", "jinja2")

LOADED_BY_ROLE = """
import sys
from jobledger.serve import start_serving_process
from jobledger.settings import Settings

process = start_serving_process(Settings(database_url=sys.argv[1]), sys.argv[2])
try:
    print(" ".join(m for m in {modules!r} if m in sys.modules))
finally:
    process.close()
"""


@pytest.mark.parametrize(
    ("role", "http"), [("worker", False), ("delivery", False), ("projector", False), ("api", True)]
)
def test_only_the_roles_that_serve_http_load_it(tmp_path, role: str, http: bool) -> None:
    """A worker, delivery or projector process leaves the `api` package and uvicorn unloaded
    (about 11 MB less resident each); an API process has them. In a fresh interpreter, as
    `ledger serve --role ROLE` starts."""
    script = LOADED_BY_ROLE.format(modules=HTTP_MODULES)
    url = f"sqlite:///{tmp_path}/ledger.db"
    done = subprocess.run(
        [sys.executable, "-c", script, url, role],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = done.stdout.split()
    if http:
        assert {"api.app", "api.reads", "api.webhook_reads"} <= set(loaded)
    else:
        assert loaded == []
