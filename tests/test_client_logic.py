"""Pure tests of the SDK's decisions: index bookkeeping, backoff, rate limit, dispatch, apply rules (no network)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd_client import ChangeEvent, ConfigdError, ValidationFailed
from configd_client._blocking import Backoff, RateLimiter, jittered_wait, next_wait_index
from configd_client._cache import LastKnownGoodCache
from configd_client._client import parse_source
from configd_client._dispatch import CallbackWorker, Dispatcher, Mailbox
from configd_client._events import Applied, Document, merge_events, plan_apply, settings_changes
from configd_client._filesource import DebounceQueue, config_key_of
from configd_client._records import canonical_json, sha256_hex
from configd_client._source import SettingsFactory


class Payment(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CFGTEST_PAY_")

    timeout_ms: int = 500
    retries: int = 3


def doc(version: int, data: dict[str, Any], origin: str = "consul") -> Document:
    return Document("payments", "service", version, sha256_hex(canonical_json(data)), data, origin)  # type: ignore[arg-type]


# --- index bookkeeping -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("previous", "returned", "expected"),
    [
        (0, 5, 5),  # first read: block on what Consul returned
        (5, 9, 9),  # moved forward
        (9, 9, 9),  # timeout or idempotent write: same index, block again
        (9, 4, 0),  # went backwards (snapshot restore, new cluster): reset, read without blocking
        (9, 0, 0),  # never block on 0
        (0, 0, 0),
        (3, -1, 0),
    ],
)
def test_next_wait_index(previous: int, returned: int, expected: int) -> None:
    assert next_wait_index(previous, returned) == expected


def test_jittered_wait_stays_within_the_spread() -> None:
    assert jittered_wait(60.0, rng=lambda: 0.0) == "60000ms"
    assert jittered_wait(60.0, rng=lambda: 1.0) == "54000ms"
    assert jittered_wait(0.5, rng=lambda: 0.5) == "1000ms"  # never below one second


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert delays[5:] == pytest.approx([2.0, 2.0, 2.0])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)
    jittered = Backoff(base=1.0, cap=8.0, rng=lambda: 0.0)
    assert jittered.next_delay() == pytest.approx(0.5)  # jitter takes up to half off


def test_rate_limiter_allows_a_burst_then_paces() -> None:
    limiter = RateLimiter(rate=10.0, burst=3.0)
    assert [limiter.delay(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.delay(100.0) == pytest.approx(0.1)
    assert limiter.delay(100.0) == pytest.approx(0.2)
    assert limiter.delay(110.0) == 0.0  # refilled after a quiet period


# --- apply decisions ---------------------------------------------------------------------------------
def test_plan_apply_takes_only_newer_versions() -> None:
    applied = Applied(3, "abc", "consul")
    assert plan_apply(None, doc(1, {}))
    assert plan_apply(applied, doc(4, {"a": 1}))
    assert not plan_apply(applied, doc(2, {"a": 1}))
    assert not plan_apply(applied, Document("payments", "service", 3, "abc", {}, "consul"))


def test_plan_apply_lets_the_source_overrule_the_cache() -> None:
    cached = Applied(7, "abc", "cache")
    assert plan_apply(cached, doc(2, {"a": 1}))  # Consul is the truth, even with a lower version
    assert not plan_apply(cached, doc(2, {"a": 1}, origin="cache"))


def test_settings_changes_and_merging_span_coalesced_versions() -> None:
    v1, v2, v3 = Payment(timeout_ms=1), Payment(timeout_ms=2, retries=4), Payment(timeout_ms=3, retries=3)
    first = ChangeEvent("p/s", v1, v2, 1, 2, settings_changes(v1, v2))
    second = ChangeEvent("p/s", v2, v3, 2, 3, settings_changes(v2, v3))
    assert first.changes == [("/retries", 3, 4), ("/timeout_ms", 1, 2)]
    merged = merge_events(first, second)
    assert (merged.old_version, merged.version) == (1, 3)
    assert merged.old is v1 and merged.new is v3
    assert merged.changes == [("/timeout_ms", 1, 3)]  # retries went 3 -> 4 -> 3: no net change
    assert merged.changed_paths == ["/timeout_ms"]


# --- dispatch ----------------------------------------------------------------------------------------
def test_mailbox_coalesces_changes_and_caps_other_items() -> None:
    merging: Mailbox[tuple[int, int]] = Mailbox(lambda a, b: (a[0], b[1]))
    for version in range(2, 7):
        merging.post((version - 1, version))
    assert len(merging) == 1
    assert merging.take() == (1, 6)
    assert merging.take() is None
    queue: Mailbox[int] = Mailbox(limit=3)
    for item in range(5):
        queue.post(item)
    assert [queue.take() for _ in range(3)] == [2, 3, 4]
    assert queue.dropped == 2


def test_a_blocked_callback_does_not_stall_another_and_then_gets_the_latest() -> None:
    release = threading.Event()
    slow_seen: list[int] = []
    fast_seen: list[int] = []
    fast_done = threading.Event()

    def slow(item: tuple[int, int]) -> None:
        release.wait(10)
        slow_seen.append(item[1])

    def fast(item: tuple[int, int]) -> None:
        fast_seen.append(item[1])
        if item[1] == 5:
            fast_done.set()

    dispatcher: Dispatcher[tuple[int, int]] = Dispatcher("test", coalesce=lambda a, b: (a[0], b[1]))
    dispatcher.add(slow)
    dispatcher.add(fast)
    for version in range(2, 6):
        dispatcher.emit((version - 1, version))
    assert fast_done.wait(10), "the fast callback was stalled by the slow one"
    release.set()
    assert dispatcher.idle(10)
    assert fast_seen == sorted(fast_seen) and fast_seen[-1] == 5
    assert slow_seen[-1] == 5 and slow_seen == sorted(set(slow_seen))  # increasing, each at most once
    print(f"\nslow callback saw {slow_seen} (coalesced), fast callback saw {fast_seen}")
    dispatcher.close()


def test_a_raising_callback_keeps_receiving() -> None:
    seen: list[int] = []

    def flaky(item: int) -> None:
        seen.append(item)
        raise RuntimeError("boom")

    worker: CallbackWorker[int] = CallbackWorker(flaky, Mailbox(), "flaky")
    for item in range(3):
        worker.post(item)
    assert worker.idle(10)
    assert seen == [0, 1, 2]
    worker.close()


# --- settings building -------------------------------------------------------------------------------
def test_precedence_init_over_env_over_configd_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFGTEST_PAY_RETRIES", "9")
    factory = SettingsFactory(Payment)
    built = factory.build({"timeout_ms": 800, "retries": 1}, "consul", "payments/service v1")
    assert type(built) is Payment
    assert (built.timeout_ms, built.retries) == (800, 9)
    assert factory.build({}, "consul", "v2") == Payment(timeout_ms=500, retries=9)
    pinned = SettingsFactory(Payment, {"retries": 2}).build({"retries": 1}, "consul", "v1")
    assert pinned.retries == 2


def test_a_document_failing_the_model_raises_validation_failed_with_paths() -> None:
    with pytest.raises(ValidationFailed) as caught:
        SettingsFactory(Payment).build({"timeout_ms": "soon"}, "consul", "payments/service v2")
    assert [e.path for e in caught.value.errors] == ["/timeout_ms"]


def test_extra_keys_follow_the_models_extra_setting() -> None:
    class Loose(BaseSettings):
        model_config = SettingsConfigDict(extra="ignore")
        retries: int = 3

    assert SettingsFactory(Loose).build({"retries": 5, "other": 1}, "consul", "v1").retries == 5
    with pytest.raises(ValidationFailed):
        SettingsFactory(Payment).build({"retries": 5, "other": 1}, "consul", "v1")  # BaseSettings forbids extras


def test_settings_factory_rejects_a_non_settings_model() -> None:
    with pytest.raises(TypeError):
        SettingsFactory(dict)  # type: ignore[type-var]


# --- cache, file paths, sources ----------------------------------------------------------------------
def test_cache_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    cache = LastKnownGoodCache(tmp_path, "configd")
    written = cache.write(doc(4, {"timeout_ms": 9}))
    assert written == tmp_path / "configd" / "payments" / "service.json"
    back = cache.read("payments", "service")
    assert back is not None and (back.version, back.data, back.origin) == (4, {"timeout_ms": 9}, "cache")
    assert list(written.parent.iterdir()) == [written]  # no temporary file left behind
    body = json.loads(written.read_text())
    body["data"]["timeout_ms"] = 10
    written.write_text(json.dumps(body))
    assert cache.read("payments", "service") is None
    assert cache.read("payments", "absent") is None


def test_debounce_queue_fires_once_after_the_last_event() -> None:
    queue = DebounceQueue(0.05)
    queue.touch(("ns", "a"), 1.00)
    queue.touch(("ns", "a"), 1.03)
    queue.touch(("ns", "b"), 1.01)
    assert queue.pop_due(1.05) == []
    assert queue.next_deadline() == pytest.approx(1.06)
    assert queue.pop_due(1.065) == [("ns", "b")]
    assert queue.pop_due(1.09) == [("ns", "a")]
    assert queue.next_deadline() is None


def test_config_key_of(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert config_key_of(root, str(root / "payments" / "service.json")) == ("payments", "service")
    assert config_key_of(root, str(root / "payments" / ".service.json.swp")) is None
    assert config_key_of(root, str(root / "payments" / "service.json~")) is None
    assert config_key_of(root, str(root / "service.json")) is None
    assert config_key_of(root, "/elsewhere/payments/service.json") is None


def test_parse_source() -> None:
    assert parse_source("file:///srv/configs").directory == Path("/srv/configs")
    assert parse_source("file://configs").directory == Path("configs")
    assert parse_source("consul://127.0.0.1:8501").address == "http://127.0.0.1:8501"
    assert parse_source(None, "http://127.0.0.1:1").kind == "consul"
    with pytest.raises(ConfigdError):
        parse_source("ftp://x")
