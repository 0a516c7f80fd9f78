"""The relay's decisions without I/O: which reads it answers, Consul's index and wait rules, waiters, ACL verdicts."""

from __future__ import annotations

import json

import pytest

from configd.relay._book import (
    DEADLINE_TICK_SECONDS,
    AclVerdicts,
    Answer,
    Deadlines,
    Snapshot,
    Verdict,
    WaiterBook,
    is_idle,
    render,
    wait_ends_on,
)
from configd.relay._reads import (
    DEFAULT_WAIT_SECONDS,
    MAX_WAIT_SECONDS,
    Shape,
    answers_at_once,
    parse_duration,
    parse_kv_read,
    readable_keys,
    request_token,
    timeout_with_jitter,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("55000ms", 55.0), ("10s", 10.0), ("1m30s", 90.0), ("5m", 300.0), ("1.5s", 1.5), ("250us", 0.00025), ("7", 7.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "s", "1m-3s"])
def test_bad_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_the_sdk_blocking_list_is_answered_by_the_relay() -> None:
    read = parse_kv_read("GET", "/v1/kv/configd/heads/payments/", "recurse=&index=42&wait=55000ms", {})
    assert read is not None
    assert read.shape == Shape("configd/heads/payments/", recurse=True)
    assert (read.index, read.wait, read.token) == (42, 55.0, "")
    assert read.shape.params() == {"recurse": ""}


def test_consul_watch_key_and_keyprefix_shapes() -> None:
    key = parse_kv_read("GET", "/v1/kv/app/x", "index=3", {"x-consul-token": "t1"})
    assert key is not None and key.shape == Shape("app/x") and key.wait == DEFAULT_WAIT_SECONDS and key.token == "t1"
    raw = parse_kv_read("GET", "/v1/kv/app/x", "raw", {})
    assert raw is not None and raw.shape == Shape("app/x", raw=True) and raw.index == 0
    keys = parse_kv_read("GET", "/v1/kv/app/", "keys&separator=/&stale", {})
    assert keys is not None and keys.shape == Shape("app/", keys=True, separator="/")
    # Consul ignores recurse and raw on a keys listing: the same upstream query serves both spellings.
    both = parse_kv_read("GET", "/v1/kv/app/", "keys&recurse&separator=/", {})
    assert both is not None and both.shape == keys.shape


def test_wait_is_capped_like_consul() -> None:
    read = parse_kv_read("GET", "/v1/kv/a", "index=5&wait=1h", {})
    assert read is not None and read.wait == MAX_WAIT_SECONDS


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("PUT", "/v1/kv/a", ""),  # writes
        ("DELETE", "/v1/kv/a", "recurse"),
        ("GET", "/v1/session/info/x", ""),  # not KV
        ("GET", "/v1/kv/a", "consistent&index=4"),  # consistent reads go to the leader
        ("GET", "/v1/kv/a", "dc=other"),
        ("GET", "/v1/kv/a", "index=abc"),  # Consul's own 400
        ("GET", "/v1/kv/a", "index=4&wait=soon"),
        ("GET", "/v1/kv/a", "index=4&index=5"),  # ambiguous: Consul decides
        ("GET", "/v1/txn", ""),
    ],
)
def test_everything_else_goes_to_consul(method: str, path: str, query: str) -> None:
    assert parse_kv_read(method, path, query, {}) is None


def test_token_precedence_is_consuls() -> None:
    assert request_token({"token": "q"}, {"x-consul-token": "h", "authorization": "Bearer b"}) == "q"
    assert request_token({}, {"x-consul-token": "h", "authorization": "Bearer b"}) == "h"
    assert request_token({}, {"authorization": "Bearer b"}) == "b"
    assert request_token({}, {"authorization": "Basic b"}) == ""


def test_index_rules() -> None:
    assert answers_at_once(0, 10)  # no index: at once
    assert answers_at_once(9, 10)  # the index moved past the client's
    assert not answers_at_once(10, 10)  # same index: wait
    # A client ahead of the data (a snapshot restore, or a relay that lags another) waits, as on Consul, and
    # is answered the lower index when its wait ends; it then resets (configd_core.blocking.next_wait_index).
    assert not answers_at_once(12, 10)


def test_jitter_is_at_most_a_sixteenth() -> None:
    assert timeout_with_jitter(16.0, rng=lambda: 0.0) == 16.0
    assert timeout_with_jitter(16.0, rng=lambda: 0.999999) == pytest.approx(17.0, abs=1e-4)


def _entries(*keys: str) -> bytes:
    return json.dumps([{"Key": k, "Value": None, "ModifyIndex": 1} for k in keys]).encode()


def test_readable_keys_of_each_shape() -> None:
    assert readable_keys(Shape("p/", recurse=True), 200, _entries("p/a", "p/b")) == {"p/a", "p/b"}
    assert readable_keys(Shape("p/", keys=True), 200, b'["p/a","p/c/"]') == {"p/a", "p/c/"}
    assert readable_keys(Shape("p/a", raw=True), 200, b"anything") == {"p/a"}
    assert readable_keys(Shape("p/"), 404, b"") == frozenset()
    assert readable_keys(Shape("p/"), 500, b"No cluster leader") is None
    assert readable_keys(Shape("p/"), 200, b"not json") is None


def _answer(index: int, *keys: str, status: int = 200) -> Answer:
    return Answer(status, (("Content-Type", "application/json"), ("X-Consul-Index", str(index))), _entries(*keys))


def test_a_snapshot_is_rendered_once_with_consuls_headers() -> None:
    shape = Shape("p/", recurse=True)
    snapshot = Snapshot.of(shape, _answer(7, "p/a"), received=1.0)
    assert snapshot is not None and snapshot.index == 7 and snapshot.keys == {"p/a"}
    wire = snapshot.answer.wire(keep_alive=True)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nX-Consul-Index: 7\r\n" in head
    assert f"Content-Length: {len(body)}".encode() in head and b"Connection: close" not in head
    assert b"Connection: close" in snapshot.answer.wire(keep_alive=False)
    assert Snapshot.of(shape, Answer(500, (), b"No cluster leader"), 1.0) is None
    assert render(599, (), b"", keep_alive=True).startswith(b"HTTP/1.1 599 Unknown")


def test_waiters_are_released_when_the_index_moves_past_theirs() -> None:
    book: WaiterBook[str] = WaiterBook()
    book.add("a", 10)
    book.add("b", 10)
    book.add("c", 12)
    assert book.release(10) == [] and len(book) == 3  # a wake-up at the same index releases nobody
    assert sorted(book.release(11)) == ["a", "b"]
    assert "c" in book and len(book) == 1
    assert book.remove("c") and not book.remove("c")
    book.add("d", 3)
    book.add("d", 4)  # re-adding moves it
    assert book.release(4) == [] and book.drain() == ["d"] and len(book) == 0


def test_an_acl_verdict_permits_only_what_the_token_was_shown() -> None:
    shape = Shape("p/", recurse=True)
    snapshot = Snapshot.of(shape, _answer(7, "p/a", "p/secret"), received=10.0)
    assert snapshot is not None
    full = Verdict(checked_at=10.5, denied=None, readable=frozenset({"p/a", "p/secret"}))
    filtered = Verdict(checked_at=10.5, denied=None, readable=frozenset({"p/a"}))
    early = Verdict(checked_at=9.0, denied=None, readable=frozenset({"p/a"}))
    denied = Verdict(checked_at=10.5, denied=Answer(403, (), b"Permission denied"), readable=frozenset())
    assert full.permits(snapshot)
    assert not filtered.permits(snapshot) and filtered.is_filtered_view(snapshot)  # Consul must answer it
    assert not early.permits(snapshot) and not early.is_filtered_view(snapshot)  # checked before the key existed
    assert not denied.permits(snapshot) and not denied.is_filtered_view(snapshot)


def test_verdicts_expire_and_stay_bounded() -> None:
    shape = Shape("p/", recurse=True)
    verdicts = AclVerdicts(ttl=5.0, capacity=3)
    verdicts.put("t", shape, Verdict(100.0, None, frozenset()), now=100.0)
    assert verdicts.get("t", shape, 104.9) is not None
    assert verdicts.get("t", shape, 105.0) is None
    assert verdicts.get("other", shape, 100.0) is None
    for i in range(10):
        verdicts.put(f"t{i}", shape, Verdict(200.0, None, frozenset()), now=200.0)
        assert len(verdicts) <= 3


@pytest.mark.parametrize("draw", [0.0, 0.3, 0.999999])
@pytest.mark.parametrize("wait", [1.0, 55.0, 300.0])
def test_a_wait_ends_on_a_tick_inside_consuls_window(wait: float, draw: float) -> None:
    tick = DEADLINE_TICK_SECONDS
    for now in (1000.0, 1000.013, 1234.5678):
        ends = wait_ends_on(now, timeout_with_jitter(wait, rng=lambda: draw), wait) * tick
        assert now + wait <= ends + 1e-9  # never before the wait is over
        assert ends <= now + wait + wait / 16 + 1e-9  # never after Consul's jitter would have answered


def test_a_short_wait_ends_at_most_one_tick_late() -> None:
    tick = DEADLINE_TICK_SECONDS
    ends = wait_ends_on(1000.01, 0.2, 0.2) * tick  # wait/16 is narrower than a tick
    assert 1000.21 - 1e-9 <= ends < 1000.21 + tick


def test_deadlines_group_waiters_by_tick() -> None:
    deadlines: Deadlines[str] = Deadlines()
    assert deadlines.add("a", 7)  # a new tick: the caller starts its one timer
    assert not deadlines.add("b", 7)
    assert deadlines.add("c", 9)
    deadlines.discard("b", 7)  # answered before its wait ended
    deadlines.discard("b", 7)
    deadlines.discard("zz", 8)
    assert len(deadlines) == 2
    assert deadlines.take(7) == ["a"] and deadlines.take(7) == []
    assert deadlines.take(9) == ["c"] and len(deadlines) == 0


def test_a_verdict_is_checked_again_before_it_expires_and_remembers_its_last_answer() -> None:
    shape = Shape("p/", recurse=True)
    verdicts = AclVerdicts(ttl=5.0)
    verdict = Verdict(100.0, None, frozenset({"p/a"}))
    assert verdicts.refresh_at(verdict) == pytest.approx(104.0)  # before get() stops returning it at 105
    one = Snapshot.of(shape, _answer(7, "p/a"), received=99.0)
    two = Snapshot.of(shape, _answer(8, "p/a", "p/new"), received=101.0)
    assert one is not None and two is not None
    assert verdict.permits(one) and verdict.permits(one)
    assert not verdict.permits(two) and verdict.permits(one)  # each snapshot judged on its own keys


def test_an_upstream_query_lingers_after_its_last_waiter() -> None:
    assert not is_idle(waiters=1, last_used=0.0, now=1000.0, linger=30.0)
    assert not is_idle(waiters=0, last_used=990.0, now=1000.0, linger=30.0)
    assert is_idle(waiters=0, last_used=970.0, now=1000.0, linger=30.0)
