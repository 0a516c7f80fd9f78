"""Pure tests of the SDK's decisions: index bookkeeping, backoff, rate limit, dispatch, apply rules (no network)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from configd_client import ChangeEvent, ConfigdError, ConfigdSettingsSource, ValidationFailed
from configd_client._cache import CacheWriter, LastKnownGoodCache, PendingWrites
from configd_client._client import parse_source
from configd_client._dispatch import POOL, CallbackPool, CallbackWorker, Dispatcher, Mailbox
from configd_client._events import Applied, Document, merge_events, plan_apply, settings_changes
from configd_client._filesource import DebounceQueue, config_key_of
from configd_client._registration import SyncSchedule, SyncWork
from configd_client._source import SettingsFactory
from configd_client._watcher import HeadIndex, inline_document
from configd_core.blocking import Backoff, RateLimiter, jittered_wait, next_wait_index
from configd_core.consul import KVEntry
from configd_core.layout import HEAD_INLINE_BYTES
from configd_core.records import HeadRecord, SchemaRef, canonical_json, head_inline, sha256_hex


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


def test_change_event_computes_its_changes_when_first_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import configd_client._events as events

    calls: list[int] = []
    real = events.settings_changes

    def counted(old: BaseSettings, new: BaseSettings) -> list[tuple[str, Any, Any]]:
        calls.append(1)
        return real(old, new)

    monkeypatch.setattr(events, "settings_changes", counted)
    v1, v2, v3 = Payment(timeout_ms=1), Payment(timeout_ms=2), Payment(timeout_ms=2, retries=5)
    event = ChangeEvent("p/s", v1, v2, 1, 2)
    merged = merge_events(event, ChangeEvent("p/s", v2, v3, 2, 3))
    assert calls == []  # nothing is diffed until someone asks
    assert event.changes == [("/timeout_ms", 1, 2)] and event.changes is event.changes and len(calls) == 1
    assert merged.changes == [("/retries", 3, 5), ("/timeout_ms", 1, 2)] and len(calls) == 2
    assert event.changed_paths == ["/timeout_ms"] and len(calls) == 2


# --- the heads of a wake-up -----------------------------------------------------------------------------
PREFIX = "configd/heads/payments/"


def head_bytes(name: str, version: int, data: dict[str, Any] | None = None, *, inline: bool = True) -> bytes:
    data = {"timeout_ms": version} if data is None else data
    canonical = canonical_json(data)
    return HeadRecord(
        namespace="payments",
        name=name,
        version=version,
        sha256=sha256_hex(canonical),
        size=len(canonical),
        schema_ref=SchemaRef(namespace="payments", name=name, version=1),
        author="t",
        created_at="2026-11-27T00:00:00.000000Z",
        data=head_inline(data, canonical) if inline else None,
    ).to_bytes()


def entry(name: str, modify_index: int, value: bytes) -> KVEntry:
    return KVEntry(PREFIX + name, value, modify_index, 1)


def test_head_index_parses_only_entries_whose_modify_index_moved() -> None:
    heads = HeadIndex(PREFIX)
    wanted = {"a", "b", "c"}
    first = [entry("a", 10, head_bytes("a", 1)), entry("b", 11, head_bytes("b", 1)), entry("x", 12, b"{}")]
    assert {name: h.version for name, h in heads.update(first, wanted).items()} == {"a": 1, "b": 1}
    assert heads.parses == 2  # "x" is not watched: never parsed
    again = heads.update(first, wanted)
    assert heads.parses == 2 and again["a"].version == 1  # same indexes: nothing parsed, same records
    moved = [entry("a", 10, head_bytes("a", 1)), entry("b", 20, head_bytes("b", 2)), entry("c", 21, b"not json")]
    result = heads.update(moved, wanted)
    assert heads.parses == 4 and {n: h.version for n, h in result.items()} == {"a": 1, "b": 2}
    heads.update(moved, wanted)
    assert heads.parses == 4  # the unreadable "c" is remembered as such until its index moves
    assert heads.update([entry("b", 20, head_bytes("b", 2))], wanted).keys() == {"b"}  # "a" is gone
    assert heads.update([entry("a", 10, head_bytes("a", 1))], wanted)["a"].version == 1
    assert heads.parses == 5  # a key that came back is parsed again
    heads.reset()
    heads.update([entry("a", 10, head_bytes("a", 1))], wanted)
    assert heads.parses == 6  # after a reset the same index proves nothing
    nested = [entry("a/b", 30, head_bytes("a", 3)), KVEntry(PREFIX, b"", 31, 1)]
    assert heads.update(nested, {"a/b", ""}) == {}


def test_inline_document_is_checked_against_the_heads_sha256() -> None:
    head = HeadRecord.from_bytes(head_bytes("a", 4, {"timeout_ms": 7}))
    document = inline_document(head)
    assert document is not None and (document.version, document.data) == (4, {"timeout_ms": 7})
    assert (document.sha256, document.origin) == (head.sha256, "consul")
    assert inline_document(HeadRecord.from_bytes(head_bytes("a", 4, inline=False))) is None
    large = {"pad": "x" * HEAD_INLINE_BYTES}
    assert inline_document(HeadRecord.from_bytes(head_bytes("a", 5, large))) is None  # too large to ride along
    tampered = head.model_copy(update={"data": {"timeout_ms": 8}})
    with pytest.raises(ConfigdError, match="does not match its sha256"):
        inline_document(tampered)


# --- registration schedule -----------------------------------------------------------------------------
def test_registration_publishes_after_the_delay_coalesced_and_never_before() -> None:
    schedule = SyncSchedule(publish_delay=1.0, renew_every=10.0, spread=0.5, rng=lambda: 0.0)
    assert schedule.deadline() is None and schedule.take(100.0) is None  # nothing to do, no session: sleep
    schedule.mark("payments", 100.0)
    schedule.mark("payments", 100.4)  # a burst: still due one delay after the FIRST unpublished mark
    schedule.mark("orders", 100.8)
    assert schedule.deadline() == 101.0
    assert schedule.take(100.99) is None
    assert schedule.take(101.0) == SyncWork(frozenset({"payments", "orders"}), renew=False)
    schedule.done(101.0, session_renewed=True)  # the first write created the session
    assert schedule.deadline() == 111.0 and schedule.take(105.0) is None
    schedule.mark("payments", 105.0)
    assert schedule.take(106.0) == SyncWork(frozenset({"payments"}), renew=False)  # a write alone: no renew
    schedule.done(106.0, session_renewed=False)
    assert schedule.take(110.9) is None
    assert schedule.take(111.0) == SyncWork(frozenset(), renew=True)  # renewal due: renew, write nothing
    schedule.done(111.0, session_renewed=True)
    assert schedule.deadline() == 121.0


def test_registration_schedule_spreads_processes_woken_together() -> None:
    late = SyncSchedule(publish_delay=1.0, renew_every=10.0, spread=0.5, rng=lambda: 1.0)
    late.mark("payments", 0.0)
    assert late.deadline() == 1.5 and late.take(1.49) is None
    late.take(1.5)
    late.done(1.5, session_renewed=True)
    assert late.deadline() == pytest.approx(1.5 + 9.0)  # renewal never later than renew_every


def test_registration_retries_after_a_failure_and_checks_the_session_first() -> None:
    schedule = SyncSchedule(publish_delay=1.0, renew_every=10.0, rng=lambda: 0.0)
    schedule.mark("payments", 0.0)
    work = schedule.take(1.0)
    assert work == SyncWork(frozenset({"payments"}), renew=False)
    schedule.failed(work, 1.0, delay=2.0)
    schedule.mark("orders", 1.5)  # a mark does not cut the backoff short
    assert schedule.deadline() == 3.0 and schedule.take(2.9) is None
    assert schedule.take(3.0) == SyncWork(frozenset({"payments", "orders"}), renew=True)
    schedule.done(3.0, session_renewed=True)
    assert schedule.deadline() == 13.0


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


def test_a_posted_item_wakes_the_callback_thread_at_once() -> None:
    arrived: list[float] = []
    got = threading.Event()

    def record(posted: float) -> None:
        arrived.append(time.perf_counter() - posted)
        got.set()

    dispatcher: Dispatcher[float] = Dispatcher("handoff")
    dispatcher.add(record)
    assert POOL.threads >= 1  # a pool thread exists once a callback is registered, not from the first item on
    for _ in range(20):
        got.clear()
        dispatcher.emit(time.perf_counter())
        assert got.wait(10)
    dispatcher.close()
    print(f"\nhand-off to the callback thread: median {statistics.median(arrived) * 1e6:.0f} us")


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


def _merge(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (a[0], b[1])


def test_two_hundred_callbacks_share_a_bounded_pool() -> None:
    pool = CallbackPool(size=4, name="configd-test-pool")
    before = threading.active_count()
    seen: dict[int, list[int]] = {i: [] for i in range(200)}
    dispatchers: list[Dispatcher[tuple[int, int]]] = []
    for index in range(200):
        dispatcher: Dispatcher[tuple[int, int]] = Dispatcher(f"cfg-{index}", _merge, pool=pool)
        dispatcher.add(lambda item, index=index: seen[index].append(item[1]))
        dispatchers.append(dispatcher)
    for version in range(2, 5):
        for dispatcher in dispatchers:
            dispatcher.emit((version - 1, version))
    assert all(d.idle(10) for d in dispatchers)
    assert pool.threads <= 4 and threading.active_count() - before <= 4
    assert all(s and s == sorted(set(s)) and s[-1] == 4 for s in seen.values())  # increasing, once, the last one


def test_one_callback_never_runs_twice_at_once_and_sees_increasing_versions() -> None:
    pool = CallbackPool(size=4, name="configd-test-pool")
    running, most = 0, 0
    guard = threading.Lock()
    seen: list[int] = []

    def callback(item: tuple[int, int]) -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        seen.append(item[1])
        with guard:
            running -= 1

    dispatcher: Dispatcher[tuple[int, int]] = Dispatcher("one", _merge, pool=pool)
    dispatcher.add(callback)
    for version in range(2, 200):
        dispatcher.emit((version - 1, version))
        if version % 10 == 0:
            time.sleep(0.001)
    assert dispatcher.idle(10)
    assert most == 1
    assert seen == sorted(set(seen)) and seen[-1] == 199
    assert len(seen) < 198  # coalesced while busy
    dispatcher.close()


def test_blocked_callbacks_delay_others_only_when_they_hold_every_pool_thread() -> None:
    pool = CallbackPool(size=2, name="configd-test-pool")
    release = threading.Event()
    blocked = Dispatcher[int]("slow", pool=pool)
    blocked.add(lambda item: release.wait(10))
    others = [Dispatcher[int](f"fast-{i}", pool=pool) for i in range(20)]
    done = [threading.Event() for _ in others]
    for dispatcher, event in zip(others, done, strict=True):
        dispatcher.add(lambda item, event=event: event.set())
    blocked.emit(1)
    for dispatcher in others:
        dispatcher.emit(1)
    # one slow callback holds one of the two threads: the 20 others run on the other one meanwhile
    assert all(event.wait(10) for event in done)
    release.set()
    assert blocked.idle(10)


def test_a_raising_callback_reaches_the_error_hook_and_keeps_receiving() -> None:
    failures: list[tuple[object, str]] = []
    seen: list[int] = []

    def flaky(item: int) -> None:
        seen.append(item)
        raise RuntimeError(f"boom {item}")

    dispatcher: Dispatcher[int] = Dispatcher("hooked", on_raise=lambda cb, item, exc: failures.append((cb, str(exc))))
    dispatcher.add(flaky)
    for item in range(3):
        dispatcher.emit(item)
        assert dispatcher.idle(10)
    assert seen == [0, 1, 2]
    assert failures == [(flaky, "boom 0"), (flaky, "boom 1"), (flaky, "boom 2")]
    dispatcher.close()


def test_inline_callbacks_run_on_the_applying_thread_in_order_and_report_failures() -> None:
    from configd_client._live import LiveSettings

    live: LiveSettings[Payment] = LiveSettings(SettingsFactory(Payment), "payments", "service")
    threads: list[str] = []
    seen: list[tuple[int, int]] = []
    failures: list[str] = []
    live._changes._on_raise = lambda cb, item, exc: failures.append(str(exc))

    @live.on_change(inline=True)
    def record(event: ChangeEvent[Payment]) -> None:
        threads.append(threading.current_thread().name)
        seen.append((event.old_version, event.version))
        if event.version == 3:
            raise RuntimeError("boom 3")

    assert live.offer(doc(1, {"retries": 1}))  # the first value is no event
    for version in (2, 3, 4):
        assert live.offer(doc(version, {"retries": version}))
    assert seen == [(1, 2), (2, 3), (3, 4)]  # delivered before offer() returned: no hand-off to wait for
    assert set(threads) == {threading.current_thread().name}
    assert failures == ["boom 3"]  # logged and reported, and the next version still arrives
    live.remove_callback(record)
    assert live.offer(doc(5, {"retries": 5}))
    assert seen[-1] == (3, 4)
    live.close()


def test_an_inline_delivery_older_than_one_delivered_is_dropped_not_reordered() -> None:
    dispatcher: Dispatcher[int] = Dispatcher("inline")
    seen: list[int] = []
    dispatcher.add(seen.append, inline=True)
    assert dispatcher.has_inline
    first, second = dispatcher.sequence(), dispatcher.sequence()
    dispatcher.deliver_inline(second, 2)  # the newer version's thread got there first
    dispatcher.deliver_inline(first, 1)
    assert seen == [2]
    dispatcher.close()
    dispatcher.deliver_inline(dispatcher.sequence(), 3)
    assert seen == [2]


def test_inline_callbacks_may_wait_on_the_live_settings_they_watch() -> None:
    """Inline callbacks run after the lock is released: reading or waiting on the object does not deadlock."""
    from configd_client._live import LiveSettings

    live: LiveSettings[Payment] = LiveSettings(SettingsFactory(Payment), "payments", "service")
    got: list[int] = []

    def reads_and_waits(event: ChangeEvent[Payment]) -> None:
        got.append(live.current.retries)
        assert live.wait_for_version(event.version, 1)

    live.on_change(reads_and_waits, inline=True)
    live.offer(doc(1, {"retries": 1}))
    live.offer(doc(2, {"retries": 2}))
    assert got == [2]
    live.close()


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


def test_environment_and_dotenv_are_read_again_for_every_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Dotted(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="CFGTEST_DOT_", env_file=tmp_path / ".env", extra="ignore")
        timeout_ms: int = 500
        retries: int = 3
        limits: dict[str, int] = {}

    monkeypatch.delenv("CFGTEST_DOT_RETRIES", raising=False)
    factory = SettingsFactory(Dotted)
    assert factory.build({"timeout_ms": 1, "retries": 1}, "consul", "v1").retries == 1
    monkeypatch.setenv("CFGTEST_DOT_RETRIES", "7")
    assert factory.build({"timeout_ms": 1, "retries": 1}, "consul", "v2").retries == 7  # env changed: seen
    (tmp_path / ".env").write_text("CFGTEST_DOT_TIMEOUT_MS=42\n")
    built = factory.build({"timeout_ms": 1, "retries": 1}, "consul", "v3")
    assert (built.timeout_ms, built.retries) == (42, 7)  # a dotenv file that appeared: seen
    monkeypatch.delenv("CFGTEST_DOT_RETRIES")
    (tmp_path / ".env").write_text("")
    assert factory.build({"timeout_ms": 1, "retries": 1}, "consul", "v4").model_dump() == {
        "timeout_ms": 1,
        "retries": 1,
        "limits": {},
    }
    # A complex value from the environment is parsed per object: two builds never share it.
    monkeypatch.setenv("CFGTEST_DOT_LIMITS", '{"rps": 5}')
    one, two = (factory.build({}, "consul", f"v{i}") for i in (5, 6))
    assert one.limits == two.limits == {"rps": 5} and one.limits is not two.limits


def test_configd_source_files_keys_as_init_settings_does() -> None:
    class Aliased(BaseSettings):
        model_config = SettingsConfigDict(extra="allow", populate_by_name=True)
        timeout_ms: int = Field(500, alias="timeoutMs")
        region: str = Field("eu", validation_alias=AliasChoices("zone", "region"))
        retries: int = 3

    document = {"timeoutMs": 1, "zone": "us", "retries": 2, "other": True, "RETRIES": 9}
    ours = ConfigdSettingsSource(Aliased, document, "consul")
    reference = InitSettingsSource(Aliased, dict(document))
    for _ in range(2):  # the second time from the remembered key plan
        assert ours.init_kwargs == reference.init_kwargs and list(ours.init_kwargs) == list(reference.init_kwargs)
        assert ours() == reference()
        ours = ConfigdSettingsSource(Aliased, document, "consul")
    own = {k: v for k, v in vars(ours).items() if k not in ("document", "origin")}
    assert own.keys() == vars(reference).keys()  # no attribute of InitSettingsSource left unset
    assert ConfigdSettingsSource(Aliased, {"timeout_ms": 4}, "consul").init_kwargs == {"timeoutMs": 4}


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


def test_cache_writes_the_canonical_bytes_a_source_kept(tmp_path: Path) -> None:
    data = {"timeout_ms": 9, "name": "é", "tags": ["a", {"b": None}]}
    canonical = canonical_json(data)
    cache = LastKnownGoodCache(tmp_path, "configd")
    kept = Document("payments", "service", 5, sha256_hex(canonical), data, "consul", canonical=canonical)
    written = cache.write(kept)
    assert canonical in written.read_bytes()
    back = cache.read("payments", "service")
    assert back is not None and (back.version, back.sha256, back.data) == (5, kept.sha256, data)
    assert json.loads(written.read_bytes()) == json.loads(cache.write(doc(5, data)).read_bytes())


def test_pending_cache_writes_keep_the_newest_and_never_go_back() -> None:
    pending = PendingWrites()
    assert pending.offer(doc(3, {"a": 3}))
    assert pending.offer(doc(5, {"a": 5}))
    assert not pending.offer(doc(4, {"a": 4}))  # older than what is queued
    assert [d.version for d in pending.take()] == [5]
    assert not pending.offer(doc(5, {"a": 5}))  # already taken: a duplicate
    assert not pending.offer(doc(2, {"a": 2}))  # older than what was written
    assert pending.take() == [] and len(pending) == 0
    other = Document("payments", "other", 1, "x", {}, "consul")
    assert pending.offer(other) and pending.offer(doc(6, {"a": 6}))
    assert sorted((d.name, d.version) for d in pending.take()) == [("other", 1), ("service", 6)]


def test_cache_writer_writes_the_newest_off_the_calling_thread_and_flushes_on_close(tmp_path: Path) -> None:
    cache = LastKnownGoodCache(tmp_path, "configd")
    alone = CacheWriter(cache, delay=0.05, spread=0.0)
    alone.submit(doc(1, {"timeout_ms": 1}))  # written after its delay with nobody asking
    deadline = time.monotonic() + 10
    while cache.read("payments", "service") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert alone.written == 1
    alone.close()
    writer = CacheWriter(cache, delay=0.05)
    for version in range(1, 6):
        writer.submit(doc(version, {"timeout_ms": version}))
    assert writer.flush(10)
    cached = cache.read("payments", "service")
    assert cached is not None and cached.version == 5 and cached.data == {"timeout_ms": 5}
    assert writer.written == 1  # the burst was one write
    writer.submit(doc(4, {"timeout_ms": 4}))  # late and older: never written over v5
    assert writer.flush(10)
    cached = cache.read("payments", "service")
    assert cached is not None and cached.version == 5
    slow = CacheWriter(cache, delay=60.0)
    slow.submit(doc(6, {"timeout_ms": 6}))
    assert slow.flush(10)  # writes now: does not wait out the delay
    cached = cache.read("payments", "service")
    assert cached is not None and cached.version == 6
    slow.submit(doc(7, {"timeout_ms": 7}))
    slow.close()  # nor does close(), which writes what is pending
    cached = cache.read("payments", "service")
    assert cached is not None and cached.version == 7
    slow.submit(doc(8, {"timeout_ms": 8}))  # after close: ignored
    assert slow.flush(1)
    cached = cache.read("payments", "service")
    assert cached is not None and cached.version == 7
    writer.close()


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
