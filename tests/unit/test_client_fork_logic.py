"""The SDK's fork rules without Consul (issue 20): callbacks pending at a fork stay the parent's, asyncio views wait
for the child's loop, a forked registration is another instance, and start-up waits on an event (issue 12.4)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic_settings import BaseSettings

from configd_client import NotFound
from configd_client._async import _LoopSubscription
from configd_client._cache import CacheSource, CacheWriter, LastKnownGoodCache
from configd_client._dispatch import Dispatcher
from configd_client._events import Document
from configd_client._filesource import FileSource
from configd_client._live import LiveSettings
from configd_client._providers import ConfigSource
from configd_client._registration import InstanceRegistration
from configd_client._source import SettingsFactory
from configd_client._watcher import ConsulSource
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import canonical_json, sha256_hex


class Greeting(BaseSettings):
    greeting: str = "unset"


def doc(version: int, greeting: str) -> Document:
    data = {"greeting": greeting}
    return Document("forks", "web", version, sha256_hex(canonical_json(data)), data, "consul")


def run_forked(body: Callable[[], object]) -> dict[str, object]:
    """Run ``body()`` in a forked child; its JSON-able result (or the exception's text) comes back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_end)
        try:
            result = {"ok": body()}
        except BaseException as exc:  # reported to the parent
            result = {"error": repr(exc)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    answer = json.loads(b"".join(chunks))
    assert "error" not in answer, answer["error"]
    return dict(answer)


def test_a_callback_pending_at_the_fork_is_delivered_by_the_parent_only() -> None:
    seen: list[str] = []
    busy, release = threading.Event(), threading.Event()

    def callback(item: str) -> None:
        seen.append(item)
        busy.set()
        release.wait(10)

    dispatcher: Dispatcher[str] = Dispatcher("configd-test")
    dispatcher.add(callback)
    dispatcher.emit("before-1")
    assert busy.wait(5)
    dispatcher.emit("before-2")  # pending behind the busy callback when the fork happens

    def child() -> list[str]:
        dispatcher.after_fork_in_child()  # what the client's at-fork hook does
        release.set()
        dispatcher.emit("after")
        assert dispatcher.idle(5)
        return seen

    answer = run_forked(child)
    # The child inherited "before-1" in the list (delivered in the parent); only "after" was delivered in it.
    assert answer["ok"] == ["before-1", "after"]
    release.set()
    assert dispatcher.idle(5)
    assert seen == ["before-1", "before-2"]  # the parent delivers what was pending, and nothing of the child's
    dispatcher.close()


def test_a_forked_child_gets_its_own_locks_even_when_a_thread_held_them(tmp_path: Path) -> None:
    live: LiveSettings[Greeting] = LiveSettings(SettingsFactory(Greeting), "forks", "web")
    live.offer(doc(1, "one"))
    holding = threading.Event()

    def hold_the_lock() -> None:
        with live._cond:  # a thread inside offer() at the moment of the fork
            holding.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold_the_lock, name="configd-test-holder")
    holder.start()
    assert holding.wait(5)

    def child() -> list[object]:
        live.after_fork_in_child()
        applied = live.offer(doc(2, "two"))  # would block forever on the parent's lock
        return [applied, live.version, live.current.greeting]

    assert run_forked(child)["ok"] == [True, 2, "two"]
    holder.join()
    assert live.version == 1  # the child's version stayed in the child
    live.close()


def test_an_asyncio_view_holds_events_after_a_fork_until_the_childs_loop_binds() -> None:
    delivered: list[tuple[int, int]] = []

    async def callback(item: int) -> None:
        delivered.append((item, id(asyncio.get_running_loop())))

    parents = asyncio.new_event_loop()
    subscription: _LoopSubscription[int] = _LoopSubscription(callback, parents, None)
    subscription.after_fork_in_child()  # what the at-fork hook does (in this process: nothing is forked)
    subscription.post_threadsafe(1)  # not to the parent's loop: held
    parents.run_until_complete(asyncio.sleep(0.05))
    assert delivered == []

    async def childs_loop() -> int:
        subscription.bind(asyncio.get_running_loop())
        subscription.post_threadsafe(2)
        for _ in range(100):
            if len(delivered) == 2:
                break
            await asyncio.sleep(0.01)
        return id(asyncio.get_running_loop())

    child_loop_id = asyncio.run(childs_loop())
    assert delivered == [(1, child_loop_id), (2, child_loop_id)]  # in order, once each, on the child's loop
    parents.close()


def test_a_forked_registration_is_another_instance_that_leaves_the_parents_session_alone() -> None:
    gateway = ConsulGateway("http://127.0.0.1:1")  # never reached: the publish delay is a minute
    registration = InstanceRegistration(gateway, KeyLayout("t"), application="app", publish_delay=60.0)
    registration.applied("forks", "web", 7)
    registration.session = "parent-session"
    parent_id = registration.instance_id

    def child() -> list[object]:
        registration.after_fork_in_child()
        registration.resume()
        record = registration.record("forks")
        return [registration.instance_id, registration.session, record.applied, record.pid]

    instance, session, applied, pid = run_forked(child)["ok"]  # type: ignore[misc]
    assert instance != parent_id and session is None and applied == {"web": 7} and pid != os.getpid()
    assert (registration.instance_id, registration.session) == (parent_id, "parent-session")
    registration.session = None  # nothing to destroy
    registration.close()
    gateway.close()


def test_a_forked_cache_writer_leaves_pending_writes_to_the_parent(tmp_path: Path) -> None:
    cache = LastKnownGoodCache(tmp_path, "t")
    writer = CacheWriter(cache, delay=60.0)
    writer.submit(doc(3, "three"))

    def child() -> list[object]:
        writer.after_fork_in_child()
        writer.submit(doc(2, "two"))  # older than what the parent has pending: never written over it
        writer.close()
        return [writer.written, cache.path("forks", "web").exists()]

    assert run_forked(child)["ok"] == [0, False]
    writer.close()  # the parent writes its own pending version
    cached = cache.read("forks", "web")
    assert cached is not None and cached.version == 3


def test_every_source_is_a_config_source(tmp_path: Path) -> None:
    cache = CacheSource(LastKnownGoodCache(tmp_path / "cache", "t"))
    files = FileSource(tmp_path)
    consul = ConsulSource("http://127.0.0.1:1", token=None, layout=KeyLayout("t"))
    try:
        assert all(isinstance(s, ConfigSource) for s in (cache, files, consul))
        assert [s.origin for s in (cache, files, consul)] == ["cache", "file", "consul"]
        cache.keep(doc(4, "four"))
        assert cache.flush(5)
        found = cache.read_now("forks", "web")
        assert found is not None and (found.version, found.origin) == (4, "cache")
        live: LiveSettings[Greeting] = LiveSettings(SettingsFactory(Greeting), "forks", "web")
        missing = files.missing(live, 0.1, None)
        assert isinstance(missing, NotFound) and "web.json" in str(missing)
        live.close()
    finally:
        cache.close()
        files.close()
        consul.close()


def test_start_up_wakes_when_the_source_reports_it_is_unreachable_without_polling() -> None:
    live: LiveSettings[Greeting] = LiveSettings(SettingsFactory(Greeting), "forks", "web")
    timer = threading.Timer(0.2, live.set_reachable, args=(False,))
    timer.start()
    started = time.monotonic()
    assert live.wait_ready(10.0, until_unreachable=True) is False
    waited = time.monotonic() - started
    assert 0.15 < waited < 2.0  # woken by set_reachable, long before the timeout
    assert live.wait_ready(0.05) is False  # without the flag an unreachable source does not end the wait
    live.offer(doc(1, "one"))
    assert live.wait_ready(0.0, until_unreachable=True) is True
    timer.join()
    live.close()
