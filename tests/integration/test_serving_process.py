"""A serving process as `ledger serve` starts it (`start_serving_process`)."""

from __future__ import annotations

import gc

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
