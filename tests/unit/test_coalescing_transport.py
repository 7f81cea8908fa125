"""`jobledger.http_protocol.CoalescingTransport`: a response's header block waits for its body
and both go out in one write; nothing waits longer than one turn of the loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobledger.http_protocol import HOLD_BYTES, CoalescingTransport


class Recorder:
    """The wrapped transport: what was written, in order, and what else was called."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.calls: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def write_eof(self) -> None:
        self.calls.append("write_eof")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def make() -> tuple[Recorder, CoalescingTransport, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    inner = Recorder()
    return inner, CoalescingTransport(inner, loop), loop  # type: ignore[arg-type]


def turn(loop: asyncio.AbstractEventLoop) -> None:
    """One iteration of the loop: the callbacks scheduled so far run."""
    loop.run_until_complete(asyncio.sleep(0))


@pytest.fixture
def parts() -> Any:
    inner, transport, loop = make()
    yield inner, transport, loop
    loop.close()


def test_a_header_block_and_its_body_leave_in_one_write(parts: Any) -> None:
    inner, transport, loop = parts
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert inner.writes == []
    transport.write(b"{}")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    turn(loop)  # the flush scheduled for the header block finds nothing left
    assert len(inner.writes) == 1


def test_a_lone_write_leaves_on_the_next_turn_of_the_loop(parts: Any) -> None:
    inner, transport, loop = parts
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert inner.writes == []
    turn(loop)
    assert inner.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]


def test_a_large_write_is_not_held(parts: Any) -> None:
    inner, transport, _loop = parts
    body = b"x" * (HOLD_BYTES + 1)
    transport.write(body)
    assert inner.writes == [body]
    transport.write(b"head")
    transport.write(body)  # joined to what was held, in order
    assert inner.writes == [body, b"head" + body]


def test_close_and_write_eof_send_what_is_held_first(parts: Any) -> None:
    inner, transport, _loop = parts
    transport.write(b"last words")
    transport.close()
    assert inner.writes == [b"last words"]
    assert inner.calls == ["close"]
    inner2, transport2, loop2 = make()
    try:
        transport2.write(b"bye")
        transport2.write_eof()
        assert inner2.writes == [b"bye"]
        assert inner2.calls == ["write_eof"]
    finally:
        loop2.close()


def test_nothing_is_held_once_the_transport_is_closing(parts: Any) -> None:
    inner, transport, _loop = parts
    inner.closing = True
    transport.write(b"late")
    assert inner.writes == [b"late"]


def test_what_is_held_when_the_connection_goes_away_is_dropped(parts: Any) -> None:
    inner, transport, loop = parts
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    inner.closing = True  # the peer went away before the loop's next turn
    turn(loop)
    assert inner.writes == []


def test_writelines_keeps_the_order_and_the_rest_is_the_wrapped_transports(parts: Any) -> None:
    inner, transport, _loop = parts
    transport.write(b"a")
    transport.writelines([b"b", memoryview(b"c")])
    assert inner.writes == [b"abc"]
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.is_closing() is False
