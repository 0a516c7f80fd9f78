"""The SDK survives fork (issue 20): real gunicorn --preload and uvicorn --workers, a multiprocessing pool with
the fork start method, and the asyncio client with a loop created after the fork — all against the session's
real Consul agent, pushed to through the server's store.

Each worker answers its pid, the setting, and when each change event fired in it (``time.monotonic()``, one
clock for every process of the host), so "every worker has the new value within 1 s of the push" is measured
in the worker itself, and polling the HTTP endpoint proves that every worker pid answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
from pydantic_settings import BaseSettings

from configd.devagent import free_ports
from configd.services.configs import ConfigStore
from configd_client import AsyncConfigClient, AsyncLiveSettings, ChangeEvent, ConfigClient, LiveSettings
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import ClientRecord

REPO = Path(__file__).resolve().parents[2]
NS, NAME = "forks", "web"
REF = f"{NS}/{NAME}"
PROPAGATION_LIMIT = 1.0  # seconds from the push to the new value in every worker (issue 20)


class AppSettings(BaseSettings):
    greeting: str = "unset"


@pytest.fixture
def store(gateway: ConsulGateway, layout: KeyLayout) -> ConfigStore:
    configs = ConfigStore(gateway, layout)
    configs.register_schema(NS, NAME, {"type": "object"}, actor="test")
    return configs


def push(store: ConfigStore, greeting: str) -> tuple[int, float]:
    """Push a new version; returns it and the moment just before the push started."""
    started = time.monotonic()
    result = store.push(NS, NAME, {"greeting": greeting}, actor="test")
    return result.head.version, started


def consul_port(consul_addr: str) -> int:
    return int(consul_addr.rsplit(":", 1)[1])


def consul_connections(pid: int, port: int) -> list[Any]:
    """The process's established TCP connections to Consul's HTTP port."""
    return [
        c
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    ]


def registered(gateway: ConsulGateway, layout: KeyLayout) -> dict[str, ClientRecord]:
    _, entries = gateway.list(layout.clients_prefix(NS))
    return {record.instance: record for record in (ClientRecord.from_bytes(e.value) for e in entries)}


# --- real prefork servers ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def serve(command: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 20.0) -> Iterator[int]:
    """Run a server in its own process group until it answers on ``port``; always kill the group."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                get(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{command[0]} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def get(port: int, hold: float = 0.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/?hold={hold}", timeout=15) as answer:
        return dict(json.loads(answer.read()))


def poll_workers(
    port: int, workers: Callable[[], set[int]], done: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[int, dict[str, Any]]:
    """Hit the endpoint, 8 slow requests at a time (so that busy workers leave the next ones to the others),
    until every current worker pid has answered with ``done(answer)`` true; returns the last answer per pid."""
    answers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(8) as pool:
        while True:
            for answer in pool.map(lambda _: get(port, hold=0.05), range(8)):
                if done(answer) or answer["pid"] not in answers:
                    answers[answer["pid"]] = answer
            current = workers()
            if current and all(pid in answers and done(answers[pid]) for pid in current):
                return {pid: answers[pid] for pid in current}
            if time.monotonic() > deadline:
                missing = {pid: answers.get(pid) for pid in current}
                pytest.fail(f"not every worker answered as expected within {timeout}s: {missing}")


def server_env(consul_addr: str, layout: KeyLayout, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FORKTEST_CONSUL": consul_addr,
        "FORKTEST_REF": REF,
        "CONFIGD_PREFIX": layout.prefix,
        "CONFIGD_CACHE_DIR": str(cache),
    }


def idle_cpu(pids: set[int], seconds: float = 2.0) -> dict[int, float]:
    """CPU seconds each process used over ``seconds`` of no requests."""
    processes = {pid: psutil.Process(pid) for pid in pids}
    before = {pid: sum(p.cpu_times()[:2]) for pid, p in processes.items()}
    time.sleep(seconds)
    return {pid: sum(p.cpu_times()[:2]) - before[pid] for pid, p in processes.items()}


@pytest.mark.timeout(90)
def test_gunicorn_preload_workers_follow_pushes_and_recycled_workers_come_up_current(
    store: ConfigStore, gateway: ConsulGateway, layout: KeyLayout, consul_addr: str, tmp_path: Path
) -> None:
    push(store, "one")
    (port,) = free_ports(1)
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--preload",
        "-w",
        "4",
        "-b",
        f"127.0.0.1:{port}",
        "--max-requests",
        "30",
        "--max-requests-jitter",  # workers recycle one by one, not all four at the same request
        "10",
        "--graceful-timeout",
        "2",
        "tests.integration.forkapps.wsgi_app:app",
    ]
    with serve(command, server_env(consul_addr, layout, tmp_path / "cache"), port, tmp_path / "gunicorn.log") as master:

        def workers() -> set[int]:
            return {child.pid for child in psutil.Process(master).children()}

        first = poll_workers(port, workers, lambda a: a["greeting"] == "one")
        assert len(first) == 4
        assert len({a["live_id"] for a in first.values()}) == 1  # the preloaded LiveSettings, in every worker

        version, pushed = push(store, "two")
        answers = poll_workers(port, workers, lambda a: a["greeting"] == "two")
        delays = {pid: a["events"][-1][1] - pushed for pid, a in answers.items() if a["events"]}
        print(
            f"\ngunicorn --preload -w 4: push → new value per worker: {sorted(round(d, 3) for d in delays.values())} s"
        )
        for pid, answer in answers.items():
            assert answer["version"] == version
            assert [v for v, _ in answer["events"]] == [version], f"worker {pid}: one event per change: {answer}"
            assert delays[pid] < PROPAGATION_LIMIT

        # Registration: each worker its own instance (and session); the master's entry stays the master's.
        time.sleep(1.0)
        records = registered(gateway, layout)
        instances = {a["instance"] for a in answers.values()}
        assert len(instances) == 4
        for pid, answer in answers.items():
            assert records[answer["instance"]].pid == pid
        assert master in {r.pid for r in records.values()}

        # Idle: no CPU to speak of, and one blocking query (one namespace) per worker — no inherited connection.
        cpu = idle_cpu(set(answers))
        port_consul = consul_port(consul_addr)
        held = {pid: len(consul_connections(pid, port_consul)) for pid in answers}
        print(
            f"idle CPU per worker over 2 s: {sorted(round(c, 4) for c in cpu.values())} s; Consul connections: {held}"
        )
        assert all(c < 0.05 for c in cpu.values()), cpu
        assert set(held.values()) == {1}, held

        # Recycle workers (--max-requests 30): the new ones come up current, with no event for what the master
        # applied before forking them.
        original = set(answers)
        deadline = time.monotonic() + 20
        recycled: dict[int, dict[str, Any]] = {}
        with ThreadPoolExecutor(8) as pool:
            while len(recycled) < 2 and time.monotonic() < deadline:
                for answer in pool.map(lambda _: get(port), range(8)):
                    if answer["pid"] not in original:
                        recycled[answer["pid"]] = answer
        assert len(recycled) >= 2, "gunicorn recycled fewer than 2 workers"
        for answer in recycled.values():
            assert (answer["greeting"], answer["version"], answer["events"]) == ("two", version, []), answer
            assert answer["instance"] not in instances

        version, pushed = push(store, "three")
        answers = poll_workers(port, workers, lambda a: a["greeting"] == "three")
        older = {pid: a for pid, a in answers.items() if a["forked_at"] < pushed}
        assert set(recycled) & set(older), "a recycled worker follows the next push too"
        for pid, answer in answers.items():
            fired = [v for v, _ in answer["events"] if v == version]
            if pid in older:  # forked before the push: the change is an event here, once, within the limit
                assert fired == [version], answer
                assert answer["events"][-1][1] - pushed < PROPAGATION_LIMIT
            else:  # recycled meanwhile: current from the start; an event only if the master had not applied it yet
                assert len(fired) <= 1, answer


@pytest.mark.timeout(60)
def test_uvicorn_workers_follow_pushes(store: ConfigStore, consul_addr: str, layout: KeyLayout, tmp_path: Path) -> None:
    push(store, "one")
    (port,) = free_ports(1)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "tests.integration.forkapps.asgi_app:app",
    ]
    with serve(command, server_env(consul_addr, layout, tmp_path / "cache"), port, tmp_path / "uvicorn.log") as main:
        seen: set[int] = set()

        def workers() -> set[int]:
            # The supervisor's children that answer HTTP (multiprocessing may add a helper process).
            children = {child.pid for child in psutil.Process(main).children()}
            return children & seen if len(children & seen) >= 2 else children

        def one(answer: dict[str, Any]) -> bool:
            seen.add(answer["pid"])
            return bool(answer["greeting"] == "one")

        first = poll_workers(port, workers, one)
        assert len(first) == 2

        version, pushed = push(store, "two")
        answers = poll_workers(port, workers, lambda a: a["greeting"] == "two")
        delays = [a["events"][-1][1] - pushed for a in answers.values()]
        print(f"\nuvicorn --workers 2: push → new value in each worker: {sorted(round(d, 3) for d in delays)} s")
        for answer in answers.values():
            assert answer["version"] == version
            assert [v for v, _ in answer["events"]] == [version], answer
        assert max(delays) < PROPAGATION_LIMIT

        cpu = idle_cpu(set(answers))
        held = {pid: len(consul_connections(pid, consul_port(consul_addr))) for pid in answers}
        print(
            f"idle CPU per worker over 2 s: {sorted(round(c, 4) for c in cpu.values())} s; Consul connections: {held}"
        )
        assert all(c < 0.05 for c in cpu.values()), cpu
        assert set(held.values()) == {1}, held


# --- multiprocessing with the fork start method ---------------------------------------------------------------
class _Forked:
    """What the pool's workers find in their copy of this module (set by the test before the pool forks)."""

    client: ConfigClient | None = None
    live: LiveSettings[AppSettings] | None = None
    events: ClassVar[list[tuple[int, int]]] = []  # (pid, version) of each change event, in any process
    started: Any = None  # a queue: each worker puts its pid once it is running


def _record(event: ChangeEvent[AppSettings]) -> None:
    _Forked.events.append((os.getpid(), event.version))


def _worker_waits_for(
    version: int, port: int, parent_sdk: tuple[str, int], parent_all: set[tuple[str, int]]
) -> dict[str, Any]:
    """In a pool worker: say it runs, wait for ``version`` and its callback, then report.

    ``parent_sdk`` is the parent client's blocking query; ``parent_all`` every connection the parent had to
    Consul at the fork (the test's own gateway too, whose copies this worker inherits and the SDK leaves alone).
    """
    client, live = _Forked.client, _Forked.live
    assert client is not None and client.registration is not None and live is not None
    pid = os.getpid()
    at_start = live.version
    inherited = any(tuple(c.laddr) == parent_sdk for c in consul_connections(pid, port))
    _Forked.started.put(pid)
    reached = live.wait_for_version(version, timeout=10)
    applied_at = time.monotonic()
    live.callbacks_idle(timeout=5)
    time.sleep(0.5)  # registration_delay 0.2: this worker's record is written by now
    return {
        "live_id": id(live),
        "version_at_start": at_start,
        "reached": reached,
        "applied_at": applied_at,
        "greeting": live.current.greeting,
        "events": [v for who, v in _Forked.events if who == pid],
        "instance": client.registration.instance_id,
        "session": client.registration.session,
        "inherited_parent_connection": inherited,
        "own_connections": len([c for c in consul_connections(pid, port) if tuple(c.laddr) not in parent_all]),
        "watch_threads": [t.name for t in threading.enumerate() if t.name.startswith("configd-watch-")],
    }


@pytest.mark.timeout(60)
def test_multiprocessing_fork_pool_follows_pushes_once_per_process(
    store: ConfigStore, gateway: ConsulGateway, layout: KeyLayout, consul_addr: str, tmp_path: Path
) -> None:
    push(store, "one")
    port = consul_port(consul_addr)
    before = {tuple(c.laddr) for c in consul_connections(os.getpid(), port)}
    client = ConfigClient(consul_addr, prefix=layout.prefix, cache_dir=tmp_path / "cache", registration_delay=0.2)
    context = multiprocessing.get_context("fork")
    try:
        live = client.settings(AppSettings, REF)
        live.on_change(_record)
        _Forked.client, _Forked.live, _Forked.started = client, live, context.Queue()
        version, _ = push(store, "two")  # applied, and its event fired, in the parent before the fork
        assert live.wait_for_version(version, timeout=5) and live.callbacks_idle(timeout=5)
        time.sleep(0.5)  # registration_delay 0.2: the parent's session exists by now
        assert client.registration is not None
        parent_instance, parent_session = client.registration.instance_id, client.registration.session
        assert parent_session is not None
        sdk = [tuple(c.laddr) for c in consul_connections(os.getpid(), port) if tuple(c.laddr) not in before]
        assert len(sdk) == 1, sdk  # the parent's one blocking query

        parent_all = {tuple(c.laddr) for c in consul_connections(os.getpid(), port)}
        with context.Pool(2) as pool:
            # Each task blocks until the push, so each of the two workers takes one.
            tasks = [pool.apply_async(_worker_waits_for, (version + 1, port, sdk[0], parent_all)) for _ in range(2)]
            assert len({_Forked.started.get(timeout=10) for _ in range(2)}) == 2
            time.sleep(0.3)  # the workers' blocking queries are in place
            new_version, pushed = push(store, "three")
            results = [task.get(timeout=20) for task in tasks]
        assert live.wait_for_version(new_version, timeout=5) and live.callbacks_idle(timeout=5)

        print(
            f"\nfork pool: push → new value in each worker: {[round(r['applied_at'] - pushed, 3) for r in results]} s"
        )
        for result in results:
            assert result["live_id"] == id(live)  # the LiveSettings taken before the fork, caught up
            assert result["version_at_start"] == version
            assert result["reached"] and result["greeting"] == "three"
            assert result["applied_at"] - pushed < PROPAGATION_LIMIT
            assert result["events"] == [new_version]  # v2 fired in the parent only; v3 once in each process
            assert result["instance"] != parent_instance
            assert result["session"] not in (None, parent_session)
            assert not result["inherited_parent_connection"]
            assert result["own_connections"] == 1  # its own blocking query
            assert result["watch_threads"] == [f"configd-watch-{NS}"]
        assert len({r["instance"] for r in results}) == 2
        assert [v for who, v in _Forked.events if who == os.getpid()] == [version, new_version]
        # The parent's registration is untouched: same instance, same session, its entry still there.
        assert (client.registration.instance_id, client.registration.session) == (parent_instance, parent_session)
        assert parent_instance in registered(gateway, layout)
    finally:
        client.close()
        _Forked.client = _Forked.live = _Forked.started = None
        _Forked.events.clear()


class _AsyncForked:
    view: AsyncLiveSettings[AppSettings] | None = None
    events: ClassVar[list[tuple[int, int, int]]] = []  # (pid, version, id of the loop the callback ran on)


async def _record_async(event: ChangeEvent[AppSettings]) -> None:
    _AsyncForked.events.append((os.getpid(), event.version, id(asyncio.get_running_loop())))


def _async_child(conn: Any, first: int, second: int) -> None:
    """In a forked child. The view and its coroutine callback were made on the parent's loop (closed since)."""
    view = _AsyncForked.view
    assert view is not None
    conn.send("forked")
    held = view.live.wait_for_version(first, timeout=10)  # no loop yet: this change's event waits for one

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        at_start = view.version  # the first use on this loop binds the view to it
        await view.callbacks_idle(timeout=5)
        conn.send("looping")
        reached = await view.wait_for_version(second, timeout=10)
        await view.callbacks_idle(timeout=5)
        return {
            "held": held,
            "at_start": at_start,
            "reached": reached,
            "greeting": view.current.greeting,
            "events": [(v, on == id(loop)) for who, v, on in _AsyncForked.events if who == os.getpid()],
        }

    conn.send(asyncio.run(main()))


@pytest.mark.timeout(60)
def test_async_client_made_before_fork_delivers_on_the_loop_created_after_it(
    store: ConfigStore, layout: KeyLayout, consul_addr: str, tmp_path: Path
) -> None:
    push(store, "one")
    client = AsyncConfigClient(consul_addr, prefix=layout.prefix, cache_dir=tmp_path / "cache", register=False)

    async def setup() -> None:
        view = await client.settings(AppSettings, REF)
        view.on_change(_record_async)
        _AsyncForked.view = view

    asyncio.run(setup())  # the parent's loop is gone before the fork, as in gunicorn's master
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_async_child, args=(child_end, 2, 3))
    try:
        child.start()
        assert parent_end.poll(10) and parent_end.recv() == "forked"
        time.sleep(0.3)  # the child's blocking query is in place
        push(store, "two")  # reaches the child before it has a loop
        assert parent_end.poll(10) and parent_end.recv() == "looping"
        push(store, "three")  # reaches the child's loop directly
        assert parent_end.poll(15), "the child did not answer"
        result = parent_end.recv()
        assert result == {
            "held": True,
            "at_start": 2,
            "reached": True,
            "greeting": "three",
            "events": [(2, True), (3, True)],  # both on the child's own loop, once each
        }
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
        asyncio.run(client.aclose())
        _AsyncForked.view = None
        _AsyncForked.events.clear()


def _file_child(conn: Any) -> None:
    live = _Forked.live
    assert live is not None
    conn.send(live.version)
    reached = live.wait_for_version(2, timeout=10)
    live.callbacks_idle(timeout=5)
    conn.send((reached, live.current.greeting, [v for who, v in _Forked.events if who == os.getpid()]))


@pytest.mark.timeout(30)
def test_file_source_follows_edits_in_a_forked_child(tmp_path: Path) -> None:
    config = tmp_path / "configs" / NS / f"{NAME}.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"greeting": "one"}))
    client = ConfigClient(source=f"file://{tmp_path / 'configs'}")
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    try:
        live = client.settings(AppSettings, REF)
        live.on_change(_record)
        _Forked.live = live
        child = context.Process(target=_file_child, args=(child_end,))
        child.start()
        try:
            assert parent_end.poll(10) and parent_end.recv() == 1
            time.sleep(0.3)  # the child's observer is watching
            config.write_text(json.dumps({"greeting": "two"}))
            assert parent_end.poll(15), "the child did not answer"
            assert parent_end.recv() == (True, "two", [2])
            assert live.wait_for_version(2, timeout=5) and live.current.greeting == "two"  # the parent's watch too
        finally:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    finally:
        client.close()
        _Forked.live = None
        _Forked.events.clear()
