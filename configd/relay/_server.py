"""The relay's asyncio server: HTTP/1.1 on httptools, one upstream blocking query per watched shape.

Why no ASGI framework: a push wakes every waiter of a shape at once, and each of them is given the same bytes.
The snapshot is rendered once (:class:`._book.Answer`) and the fan-out is one pass over the released waiters with
one ``transport.write`` each, with no task, coroutine or header building per waiter; a waiter costs one protocol
object and one entry in its deadline tick while it waits (:class:`._book.Deadlines`: one timer per tick, not per
waiter), and a watcher's re-ask is parsed once per distinct request line and token (docs/relay.md has the
measurements that decided this).

Upstream failures: when the upstream query of a shape fails (Consul unreachable, or a 5xx such as "No cluster
leader"), every waiter of that shape is answered with a 500 at once, and so is every new read of it until the
upstream answers again; a waiter is never handed old data as if it were current. That is what a client talking
to Consul directly would see, so the SDK's ``stale`` flag means the same behind a relay. If Consul refuses the
relay's own token (403), reads of that shape are forwarded to Consul with the caller's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode

import httptools
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from configd_core.blocking import Backoff, RateLimiter, jittered_wait, next_wait_index
from configd_core.errors import ConsulUnavailable

from ._book import (
    DEADLINE_TICK_SECONDS,
    LINGER_SECONDS,
    AclVerdicts,
    Answer,
    Deadlines,
    Snapshot,
    Verdict,
    WaiterBook,
    is_idle,
    kept_headers,
    relay_error,
    render,
    wait_ends_on,
)
from ._reads import KVRead, Shape, answers_at_once, parse_kv_read, readable_keys, timeout_with_jitter
from ._upstream import Upstream

log = logging.getLogger("configd.relay")

#: Seconds the relay's own blocking query asks Consul to hold (jittered down by up to 10 %, as the SDK does).
UPSTREAM_WAIT_SECONDS = 55.0
#: Parsed reads kept by (method, target, token headers): watchers of a shape re-ask with the same request line.
_PARSED_READS = 4096
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def tune_garbage_collector() -> None:
    """Fewer full collections: each one walks every waiting connection's objects.

    Measured with 10,000 waiters (~140,000 objects): a full collection takes ~20 ms, and at the default
    thresholds one ran every ~3 pushes (each push re-creates every waiter's request, which survives to the
    oldest generation while it waits), pausing the fan-out or the re-asks it triggers. Objects alive after
    start-up are frozen out of every collection, and a full one runs after 100 collections of the middle
    generation instead of 10; reference cycles of closed connections are still collected, later.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one (each waiter holds a socket); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


class _Request:
    """One downstream request; its headers stay bytes until it is forwarded."""

    __slots__ = ("body", "keep_alive", "method", "raw_headers", "target", "token_headers")

    def __init__(
        self,
        method: str,
        target: str,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        token_headers: tuple[str, str] = ("", ""),
    ) -> None:
        self.method = method
        self.target = target  # path and query as sent
        self.raw_headers = raw_headers
        self.body = body
        self.keep_alive = keep_alive
        self.token_headers = token_headers  # X-Consul-Token, Authorization ("" when absent)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw_headers]

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


class _Metrics:
    def __init__(self, relay: Relay) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("configd_relay_downstream_waiters", "Downstream blocking queries held now", registry=r).set_function(
            lambda: float(sum(len(w.book) for w in relay.watches.values()))
        )
        Gauge(
            "configd_relay_upstream_queries", "Upstream blocking queries (one per watched shape)", registry=r
        ).set_function(lambda: float(len(relay.watches)))
        Gauge("configd_relay_connections", "Downstream connections open now", registry=r).set_function(
            lambda: float(relay.connections)
        )
        self.fanout = Histogram(
            "configd_relay_fanout_seconds",
            "From an upstream answer that moved the index to the last waiter written",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.last_fanout = Gauge(
            "configd_relay_last_fanout_started_unixtime",
            "Wall-clock time when the last index move reached the relay (its fan-out began)",
            registry=r,
        )
        self.woken = Counter("configd_relay_waiters_woken", "Waiters answered because the index moved", registry=r)
        self.served = Counter("configd_relay_reads_served", "KV reads answered from memory", registry=r)
        self.forwarded = Counter("configd_relay_forwarded_requests", "Requests forwarded to Consul", registry=r)
        self.upstream = Counter("configd_relay_upstream_requests", "Blocking queries sent to Consul", registry=r)
        self.upstream_errors = Counter("configd_relay_upstream_errors", "Failed upstream queries", registry=r)
        self.acl_checks = Counter("configd_relay_acl_checks", "ACL checks sent to Consul", registry=r)


class _Waiter:
    """One downstream request that waits for its shape's index to move."""

    __slots__ = ("conn", "read", "request", "tick", "watch")

    def __init__(self, conn: _Connection, request: _Request, read: KVRead, watch: _Watch, tick: int) -> None:
        self.conn = conn
        self.request = request
        self.read = read
        self.watch = watch
        self.tick = tick  # the deadline tick its wait ends on


@dataclass
class _Watch:
    """One shape followed upstream: its snapshot, its failure (if failing) and its waiters."""

    shape: Shape
    last_used: float
    snapshot: Snapshot | None = None
    failure: Answer | None = None
    refused: bool = False  # Consul refused the relay's own token: reads of this shape are forwarded
    book: WaiterBook[_Waiter] = field(default_factory=WaiterBook)
    task: asyncio.Task[None] | None = None


class Relay:
    """The relay's state and its I/O: downstream connections, upstream queries, ACL checks, forwarding.

    Args:
        consul: Consul's HTTP address (``http://127.0.0.1:8500``).
        token: the relay's own ACL token, used for its upstream queries only (it needs read on watched keys).
        linger: seconds an upstream query outlives its last waiter.
        acl_ttl: seconds an ACL verdict is reused.
    """

    def __init__(
        self,
        consul: str,
        *,
        token: str | None = None,
        linger: float = LINGER_SECONDS,
        acl_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consul = consul.rstrip("/")
        self.token = token or ""
        self.linger = linger
        self.clock = clock
        self.watches: dict[Shape, _Watch] = {}
        self.verdicts = AclVerdicts() if acl_ttl is None else AclVerdicts(ttl=acl_ttl)
        self.connections = 0
        self.metrics = _Metrics(self)
        self._checks: dict[tuple[str, Shape], asyncio.Future[Verdict]] = {}
        self.deadlines: Deadlines[_Waiter] = Deadlines()
        self._refreshing: dict[tuple[str, Shape], asyncio.TimerHandle] = {}  # checks ahead of a verdict's expiry
        self._reads: dict[tuple[str, str, tuple[str, str]], KVRead | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._upstream: Upstream | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._upstream = Upstream(self.consul)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        for task in [*(w.task for w in self.watches.values() if w.task), *self._tasks, self._sweeper]:
            if task is not None:
                task.cancel()
        for timer in self._refreshing.values():
            timer.cancel()
        self._refreshing.clear()
        self.watches.clear()
        if self._upstream is not None:
            await self._upstream.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, max(0.05, self.linger / 2)))
            now = self.clock()
            for shape, watch in list(self.watches.items()):
                if is_idle(len(watch.book), watch.last_used, now, self.linger):
                    log.debug("relay: stopping idle watch of %s", shape)
                    if watch.task is not None:
                        watch.task.cancel()
                    del self.watches[shape]

    # --- requests --------------------------------------------------------------------------------------
    def handle(self, conn: _Connection, request: _Request) -> None:
        if request.method == "GET" and request.path == "/metrics":
            body = generate_latest(self.metrics.registry)
            conn.respond(
                render(200, (("Content-Type", "text/plain; version=0.0.4"),), body, keep_alive=request.keep_alive)
            )
            return
        # Thousands of watchers of a shape re-ask with one request line: parse it once (parse_kv_read is pure).
        key = (request.method, request.target, request.token_headers)
        try:
            read = self._reads[key]
        except KeyError:
            token, authorization = request.token_headers
            headers = {"x-consul-token": token, "authorization": authorization}
            read = parse_kv_read(request.method, request.path, request.query, headers)
            if len(self._reads) >= _PARSED_READS:
                self._reads.clear()
            self._reads[key] = read
        if read is None:
            self._spawn(self._forward(conn, request))
            return
        watch = self.watches.get(read.shape)
        if watch is None and read.index < 1:
            # A plain read of a shape nobody watches starts no upstream query: Consul answers it.
            self._spawn(self._forward(conn, request))
            return
        if watch is None:
            watch = self._start_watch(read.shape)
        watch.last_used = self.clock()
        self._serve(conn, request, read, watch)

    def _serve(self, conn: _Connection, request: _Request, read: KVRead, watch: _Watch) -> None:
        if watch.refused:
            self._spawn(self._forward(conn, request))
            return
        if watch.failure is not None:
            conn.respond(watch.failure.wire(request.keep_alive))
            return
        snapshot = watch.snapshot
        if snapshot is None:
            self._wait(conn, request, read, watch)  # answered with the first snapshot
            return
        verdict = self.verdicts.get(read.token, read.shape, self.clock())
        if verdict is None or not verdict.permits(snapshot):
            self._spawn(self._checked([(conn, request, read)], watch, verdict, at_once=False))
            return
        if answers_at_once(read.index, snapshot.index):
            self.metrics.served.inc()
            conn.respond(snapshot.answer.wire(request.keep_alive))
        else:
            self._wait(conn, request, read, watch)

    def _wait(self, conn: _Connection, request: _Request, read: KVRead, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        tick = wait_ends_on(loop.time(), timeout_with_jitter(read.wait), read.wait)
        waiter = _Waiter(conn, request, read, watch, tick)
        watch.book.add(waiter, read.index)
        if self.deadlines.add(waiter, tick):
            loop.call_at(tick * DEADLINE_TICK_SECONDS, self._expire_tick, tick)
        conn.waiter = waiter

    def _expire_tick(self, tick: int) -> None:
        for waiter in self.deadlines.take(tick):
            self._expire(waiter)

    def _expire(self, waiter: _Waiter) -> None:
        watch = waiter.watch
        if not watch.book.remove(waiter):
            return
        watch.last_used = self.clock()
        waiter.conn.waiter = None
        if watch.failure is not None:
            waiter.conn.respond(watch.failure.wire(waiter.request.keep_alive))
        elif watch.snapshot is not None:
            # Consul's answer when the wait ends: the current data and index, whether or not it moved.
            self._give([waiter], watch.snapshot, watch)
        else:
            waiter.conn.respond(relay_error("relay: no answer from Consul yet").wire(waiter.request.keep_alive))

    def forget(self, waiter: _Waiter) -> None:
        """The waiter's connection closed."""
        if waiter.watch.book.remove(waiter):
            waiter.watch.last_used = self.clock()
        self.deadlines.discard(waiter, waiter.tick)

    def _give(self, waiters: list[_Waiter], snapshot: Snapshot, watch: _Watch) -> None:
        """Answer waiters with ``snapshot`` at once, each token's group once Consul has a fresh verdict on it.

        One pass, writing as it goes: the first waiter is answered before the last one is looked at (a push's
        10,000 waiters are a few ms of Python before the first write when each step is its own pass).
        """
        keep_alive, closing = snapshot.answer.keep_alive_bytes, snapshot.answer.closing_bytes
        now = self.clock()
        permitted: dict[str, bool] = {}
        unchecked: dict[str, list[_Waiter]] = {}
        discard = self.deadlines.discard
        for waiter in waiters:
            discard(waiter, waiter.tick)
            conn = waiter.conn
            conn.waiter = None
            token = waiter.read.token
            allowed = permitted.get(token)
            if allowed is None:
                verdict = self.verdicts.get(token, watch.shape, now)
                allowed = permitted[token] = verdict is not None and verdict.permits(snapshot)
                if allowed and verdict is not None:
                    self._refresh_later(token, watch.shape, verdict, now)
            if allowed:
                conn.respond(keep_alive if waiter.request.keep_alive else closing)
            else:
                unchecked.setdefault(token, []).append(waiter)
        for token, group in unchecked.items():
            # The verdict expired, or the snapshot shows a key this token was not checked for: ask again,
            # once for the whole group.
            verdict = self.verdicts.get(token, watch.shape, now)
            items = [(w.conn, w.request, w.read) for w in group]
            self._spawn(self._checked(items, watch, verdict, at_once=True))

    async def _checked(
        self,
        items: list[tuple[_Connection, _Request, KVRead]],
        watch: _Watch,
        old: Verdict | None,
        *,
        at_once: bool,
    ) -> None:
        """Serve reads of one token once Consul said whether that token may read the shape.

        ``at_once``: the reads are due an answer now (their index moved or their wait ended); otherwise each
        is served as a new request (answered, or waiting on).
        """
        token = items[0][2].token
        snapshot = watch.snapshot
        try:
            if old is not None and snapshot is not None and old.is_filtered_view(snapshot):
                verdict = old
            else:
                verdict = await self._verdict(token, watch.shape)
        except ConsulUnavailable as exc:
            for conn, request, _ in items:
                conn.respond(relay_error(f"relay: {exc}").wire(request.keep_alive))
            return
        snapshot = watch.snapshot
        usable = snapshot is not None and watch.failure is None and not watch.refused
        permitted = usable and snapshot is not None and verdict.permits(snapshot)
        served = 0
        for conn, request, read in items:
            if conn.closed:
                continue
            if verdict.denied is not None:
                conn.respond(verdict.denied.wire(request.keep_alive))  # Consul's own 403, as Consul sent it
            elif usable and not permitted:
                # This token sees less than the relay (Consul filters a recursive read by ACL): Consul answers it.
                self._spawn(self._forward(conn, request))
            elif permitted and at_once and snapshot is not None:
                served += 1
                conn.respond(snapshot.answer.wire(request.keep_alive))
            else:
                self._serve(conn, request, read, watch)
        if served:
            self.metrics.served.inc(served)

    def _refresh_later(self, token: str, shape: Shape, verdict: Verdict, now: float) -> None:
        """Check ``token`` again before its verdict expires (:meth:`._book.AclVerdicts.refresh_at`)."""
        key = (token, shape)
        if key not in self._refreshing:
            delay = max(0.0, self.verdicts.refresh_at(verdict) - now)
            self._refreshing[key] = asyncio.get_running_loop().call_later(delay, self._refresh, key)

    def _refresh(self, key: tuple[str, Shape]) -> None:
        del self._refreshing[key]
        self._spawn(self._check_quietly(*key))

    async def _check_quietly(self, token: str, shape: Shape) -> None:
        """A failure leaves the verdict to expire: the next push that needs it checks it on its way."""
        with contextlib.suppress(ConsulUnavailable):
            await self._verdict(token, shape)

    async def _verdict(self, token: str, shape: Shape) -> Verdict:
        """Ask Consul the same read, without blocking, with the caller's token (one check per token and shape)."""
        key = (token, shape)
        pending = self._checks.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._checks[key] = future
        try:
            sent = self.clock()
            self.metrics.acl_checks.inc()
            assert self._upstream is not None
            headers = [("X-Consul-Token", token)] if token else []
            answer = await self._upstream.request("GET", _target(shape.path, shape.params()), headers)
            if answer.status == 403:
                verdict = Verdict(sent, Answer(403, kept_headers(answer.headers), answer.body), frozenset())
            else:
                keys = readable_keys(shape, answer.status, answer.body)
                if keys is None:
                    raise ConsulUnavailable(f"ACL check answered {answer.status}: {answer.body[:200]!r}")
                verdict = Verdict(sent, None, keys)
            self.verdicts.put(token, shape, verdict, self.clock())
            future.set_result(verdict)
            return verdict
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: a check nobody else awaited must not log "never retrieved"
            raise
        finally:
            del self._checks[key]

    # --- upstream ------------------------------------------------------------------------------------------
    def _start_watch(self, shape: Shape) -> _Watch:
        watch = _Watch(shape, last_used=self.clock())
        self.watches[shape] = watch
        watch.task = asyncio.get_running_loop().create_task(self._follow(watch))
        return watch

    async def _follow(self, watch: _Watch) -> None:
        """The one upstream blocking query of a shape, with configd_core.blocking's rules."""
        assert self._upstream is not None
        backoff, rate = Backoff(), RateLimiter()
        index = 0
        headers = [("X-Consul-Token", self.token)] if self.token else []
        while True:
            pause = rate.delay(self.clock())
            if pause > 0:
                await asyncio.sleep(pause)
            params = watch.shape.params()
            if index > 0:  # never block on index 0: such a query returns at once and would spin
                params |= {"index": str(index), "wait": jittered_wait(UPSTREAM_WAIT_SECONDS)}
            self.metrics.upstream.inc()
            try:
                answer = await self._upstream.request(
                    "GET", _target(watch.shape.path, params), headers, timeout=UPSTREAM_WAIT_SECONDS * 1.1 + 30
                )
            except ConsulUnavailable as exc:
                self._fail(watch, relay_error(f"relay: {exc}"), refused=False)
                index = 0  # after an outage the cluster may be another one: read first, then block
                await asyncio.sleep(backoff.next_delay())
                continue
            got = Answer(answer.status, kept_headers(answer.headers), answer.body)
            snapshot = Snapshot.of(watch.shape, got, self.clock())
            if snapshot is None:
                self._fail(watch, got, refused=answer.status in (401, 403))
                index = 0
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            index = next_wait_index(index, snapshot.index)
            self._publish(watch, snapshot)

    def _publish(self, watch: _Watch, snapshot: Snapshot) -> None:
        started = time.perf_counter()
        wall = time.time()
        previous = watch.snapshot
        watch.snapshot, watch.failure, watch.refused = snapshot, None, False
        released = watch.book.release(snapshot.index)
        if previous is None:
            # Waiters that came before the first answer hold indexes that may not be below it: each is
            # served as a new request now (answered at once, or waiting on with its index).
            released += watch.book.drain()
            for waiter in released:
                self.deadlines.discard(waiter, waiter.tick)
                waiter.conn.waiter = None
            for waiter in released:
                self._serve(waiter.conn, waiter.request, waiter.read, watch)
        else:
            self._give(released, snapshot, watch)  # forgets each waiter's deadline as it answers it
        if released and previous is not None:
            self.metrics.last_fanout.set(wall)
            self.metrics.woken.inc(len(released))
            self.metrics.fanout.observe(time.perf_counter() - started)
            watch.last_used = self.clock()

    def _fail(self, watch: _Watch, failure: Answer, *, refused: bool) -> None:
        self.metrics.upstream_errors.inc()
        if watch.failure is None:
            log.warning(
                "relay: upstream query of %s failed: %s %s",
                watch.shape.path,
                failure.status,
                failure.body[:200].decode(errors="replace"),
            )
        watch.snapshot, watch.failure, watch.refused = None, failure, refused
        for waiter in watch.book.drain():
            self.deadlines.discard(waiter, waiter.tick)
            waiter.conn.waiter = None
            if refused:
                self._spawn(self._forward(waiter.conn, waiter.request))
            else:
                waiter.conn.respond(failure.wire(waiter.request.keep_alive))

    # --- everything else goes to Consul --------------------------------------------------------------------
    async def _forward(self, conn: _Connection, request: _Request) -> None:
        """Send the request to Consul unchanged (with the caller's token) and its answer back unchanged."""
        assert self._upstream is not None
        self.metrics.forwarded.inc()
        headers = [(n, v) for n, v in request.headers if n.lower() not in _HOP_BY_HOP]
        # A blocking request may be held up to Consul's 10 min cap plus jitter.
        timeout = 700.0 if "index=" in request.query else 60.0
        try:
            answer = await self._upstream.request(
                request.method, request.target, headers, request.body, timeout=timeout
            )
        except ConsulUnavailable as exc:
            conn.respond(relay_error(f"relay: {exc}").wire(request.keep_alive))
            return
        kept = [(n, v) for n, v in answer.headers if n.lower() not in _HOP_BY_HOP and n.lower() != "date"]
        conn.respond(render(answer.status, kept, answer.body, keep_alive=request.keep_alive))


def _target(path: str, params: dict[str, str]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


class _Connection(asyncio.Protocol):
    """One downstream HTTP/1.1 connection; requests on it are answered in order."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: _Waiter | None = None
        self._current: _Request | None = None  # the request being answered; later ones wait in the queue
        self._queue: list[_Request] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._tokens: tuple[str, str] = ("", "")
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not an asyncio subclass
        self.relay.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.relay.connections -= 1
        if self.waiter is not None:
            self.relay.forget(self.waiter)
            self.waiter = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close_with(400, b"upgrade not supported")
        except httptools.HttpParserError:
            self._close_with(400, b"malformed HTTP request")

    def _close_with(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(render(status, (("Content-Type", "text/plain"),), body, keep_alive=False))
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._tokens = b"", [], [], ("", "")

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"x-consul-token":
            self._tokens = (value.decode("latin-1"), self._tokens[1])
        elif lowered == b"authorization":
            self._tokens = (self._tokens[0], value.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = _Request(
            self.parser.get_method().decode("ascii", "replace"),
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body) if self._body else b"",
            self.parser.should_keep_alive(),
            self._tokens,
        )
        if self._current is not None:
            self._queue.append(request)
            if self.transport is not None and len(self._queue) > 64:
                self.transport.pause_reading()
            return
        self._current = request
        self.relay.handle(self, request)

    # answers
    def respond(self, wire: bytes) -> None:
        """Write one whole response; then the next queued request is handled."""
        if self.closed or self.transport is None:
            return
        self.transport.write(wire)
        if self._current is None or not self._current.keep_alive:
            self.transport.close()
            self.closed = True
            return
        self._current = None
        if self._queue:
            self._current = self._queue.pop(0)
            if len(self._queue) <= 16:
                self.transport.resume_reading()
            self.relay.handle(self, self._current)


async def serve(relay: Relay, host: str, port: int, *, ready: Callable[[int], None] | None = None) -> None:
    """Run the relay on ``host:port`` until cancelled (``ready`` is called with the bound port)."""
    await relay.start()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(relay), host, port, backlog=16384, reuse_address=True)
    try:
        bound = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready(bound)
        await server.serve_forever()
    finally:
        server.close()
        await relay.close()


def run(consul: str, host: str, port: int, *, token: str | None = None) -> None:
    """``configd relay``: run until interrupted, on uvloop when it is installed."""
    limit = raise_open_files_limit()
    relay = Relay(consul, token=token)
    tune_garbage_collector()

    def announce(bound: int) -> None:
        print(f"configd relay on http://{host}:{bound} (Consul {consul}, open-files limit {limit})", flush=True)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the server extra
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(relay, host, port, ready=announce))
