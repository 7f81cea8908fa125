"""The bench's wrk load generator (`bench.load`) against a real local server: the request it
sends, a unique header per request, and the figures it reads back."""

from __future__ import annotations

import shutil

import pytest

from bench.load import Request, _wrk
from tests.fakes.receiver import webhook_receiver as webhook_receiver  # a fixture

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (`make bench` installs it)"
)


def test_wrk_sends_the_request_with_a_unique_key_each_time_and_reads_the_figures(
    webhook_receiver,
):
    receiver = webhook_receiver()
    body = b'{"title": "a [==[ tricky ]==] body"}'
    result = _wrk(
        Request("POST", receiver.url("/load"), {"X-Token": "t]]1"}, body, "Idempotency-Key"),
        concurrency=4,
        seconds=1,
        guard=False,  # a loaded test machine is not the bench's quiet one (parse_wrk's test)
    )
    got = receiver.requests_for("/load")
    assert result.errors == 0 and 0 < result.requests <= len(got)
    assert 0 < result.p50_ms <= result.p99_ms and 0.9 < result.seconds < 3
    assert {r.body for r in got} == {body}
    assert {r.headers["x-token"] for r in got} == {"t]]1"}
    keys = [r.headers["idempotency-key"] for r in got]
    assert len(set(keys)) == len(keys)
