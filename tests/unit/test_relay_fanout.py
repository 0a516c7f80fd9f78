"""The relay's fan-out and deadlines in one process, on fake transports: no socket to a client, no Consul.

The relay's Consul address is a closed port, so an ACL check it sends fails at once ("Consul unavailable").
"""

from __future__ import annotations

import asyncio
import json
import time

from configd.relay._book import DEADLINE_TICK_SECONDS, Answer, Snapshot, Verdict
from configd.relay._reads import Shape
from configd.relay._server import Relay, _Connection, _Watch

SHAPE = Shape("p/", recurse=True)


class _Transport:
    """What a client would have read: each write, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _snapshot(index: int, relay: Relay) -> Snapshot:
    body = json.dumps([{"Key": "p/a", "Value": None, "ModifyIndex": index}]).encode()
    answer = Answer(200, (("Content-Type", "application/json"), ("X-Consul-Index", str(index))), body)
    snapshot = Snapshot.of(SHAPE, answer, relay.clock())
    assert snapshot is not None
    return snapshot


async def _relay_with_watch(index: int, tokens: tuple[str, ...] = ("",)) -> tuple[Relay, _Watch]:
    relay = Relay("http://127.0.0.1:1")
    await relay.start()
    watch = _Watch(SHAPE, last_used=relay.clock(), snapshot=_snapshot(index, relay))
    relay.watches[SHAPE] = watch  # no upstream query: the test publishes snapshots itself
    for token in tokens:
        relay.verdicts.put(token, SHAPE, Verdict(relay.clock(), None, frozenset({"p/a"})), relay.clock())
    return relay, watch


def _client(relay: Relay, index: int, *, wait: str = "55s", token: str = "") -> _Transport:
    conn = _Connection(relay)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    header = f"X-Consul-Token: {token}\r\n" if token else ""
    conn.data_received(f"GET /v1/kv/p/?recurse&index={index}&wait={wait} HTTP/1.1\r\nHost: r\r\n{header}\r\n".encode())
    return transport


def _index_of(wire: bytes) -> int:
    head = wire.partition(b"\r\n\r\n")[0].decode()
    return int(head.split("X-Consul-Index: ")[1].split("\r\n")[0])


async def test_a_push_answers_every_waiter_and_forgets_their_deadlines() -> None:
    relay, watch = await _relay_with_watch(10)
    try:
        clients = [_client(relay, 10) for _ in range(50)]
        assert len(watch.book) == 50 and len(relay.deadlines) == 50
        assert all(c.writes == [] for c in clients)
        relay._publish(watch, _snapshot(11, relay))
        assert all(len(c.writes) == 1 and _index_of(c.writes[0]) == 11 for c in clients)
        assert len(watch.book) == 0 and len(relay.deadlines) == 0
        assert list(relay._refreshing) == [("", SHAPE)]  # one check of the token ahead of its verdict's expiry
        # The same request line from every watcher was parsed once.
        assert len(relay._reads) == 1
    finally:
        await relay.close()


async def test_a_wait_ends_with_the_current_data_inside_consuls_window() -> None:
    relay, _ = await _relay_with_watch(10)
    try:
        started = time.monotonic()
        client = _client(relay, 10, wait="1s")
        while not client.writes and time.monotonic() - started < 5:
            await asyncio.sleep(0.01)
        waited = time.monotonic() - started
        # The tick is inside [wait, wait + wait/16] (test_relay_logic); the rest is slack for a loaded machine.
        assert 1.0 <= waited <= 1.0 + 1.0 / 16 + DEADLINE_TICK_SECONDS + 0.5, waited
        assert _index_of(client.writes[0]) == 10 and len(relay.deadlines) == 0
    finally:
        await relay.close()


async def test_a_token_without_a_fresh_verdict_is_checked_before_its_waiters_are_answered() -> None:
    relay, watch = await _relay_with_watch(10, tokens=("checked",))
    try:
        allowed = [_client(relay, 10, token="checked") for _ in range(3)]
        # A token never checked is checked before its first request is served: Consul is unreachable here.
        unknown = _client(relay, 10, token="unknown")
        for _ in range(100):
            if unknown.writes:
                break
            await asyncio.sleep(0.01)
        assert unknown.writes and unknown.writes[0].startswith(b"HTTP/1.1 500")
        relay.verdicts.put("late", SHAPE, Verdict(relay.clock(), None, frozenset({"p/a"})), relay.clock())
        late = _client(relay, 10, token="late")
        relay.verdicts = type(relay.verdicts)()  # "late" (and "checked") expire before the push
        relay.verdicts.put("checked", SHAPE, Verdict(relay.clock(), None, frozenset({"p/a"})), relay.clock())
        relay._publish(watch, _snapshot(11, relay))
        assert all(len(c.writes) == 1 and _index_of(c.writes[0]) == 11 for c in allowed)  # in the same pass
        assert late.writes == []  # waits for its check
        for _ in range(100):
            if late.writes:
                break
            await asyncio.sleep(0.01)
        assert late.writes[0].startswith(b"HTTP/1.1 500")  # the check failed: Consul is unavailable, not old data
        assert len(relay.deadlines) == 0
    finally:
        await relay.close()
