"""Callback delivery off the watch thread: one mailbox per registered callback, run by a small shared pool.

Every callback of every LiveSettings in the process is run by one pool of at most :data:`POOL_SIZE` daemon
threads (:class:`CallbackPool`), so an application watching 200 configs with a callback each holds 4 callback
threads, not 200. Each callback keeps its guarantees: versions in increasing order, each at most once, never two
runs of the same callback at once; while a callback is busy the change events queued for it are coalesced into
one (:func:`merge_events`), so under a burst it may skip intermediate versions, but the last applied version
always reaches it. The watcher only posts to a mailbox: a slow or raising callback never stalls it. A callback
registered with ``inline=True`` is the exception, by request: :class:`Dispatcher` runs it on the caller's thread
(:meth:`Dispatcher.deliver_inline`), trading that isolation for no hand-off.

A callback occupies a pool thread only while it runs, and a callback with more pending work goes to the back of
the queue after each run, so a busy callback cannot starve the others. The trade-off: while :data:`POOL_SIZE`
callbacks are *all* inside a call at once (sleeping, blocked on I/O), the other callbacks wait for one of them to
return — they are delayed, never dropped or reordered (docs/client.md, "Callbacks").
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger("configd_client")

T = TypeVar("T")

#: Told of each exception a callback raised, with the item it was handling (rollouts count them as failures).
RaiseHook = Callable[[Callable[[T], object], T, Exception], None]

#: Errors queued for one callback beyond this are dropped, oldest first.
MAX_PENDING = 100


def call_reporting(callback: Callable[[T], object], item: T, on_raise: RaiseHook[T] | None) -> None:
    """The one place a callback runs and its exception is caught (a failure never ends delivery to it)."""
    try:
        callback(item)
    except Exception as exc:
        callback_raised(callback, item, exc, on_raise)


def callback_raised(callback: Callable[[T], object], item: T, exc: Exception, on_raise: RaiseHook[T] | None) -> None:
    """``callback`` raised ``exc`` on ``item``: logged, then handed to the ``on_raise`` hook if any (a rollout's
    failure report); the hook only reports, it must not end delivery either."""
    log.exception("configd_client: callback %r raised", callback, exc_info=exc)
    if on_raise is not None:
        try:
            on_raise(callback, item, exc)
        except Exception:
            log.exception("configd_client: could not report the failure of callback %r", callback)


class Mailbox(Generic[T]):
    """Pending items of one callback (pure; the caller holds the lock).

    With ``coalesce``, a new item merges into the last pending one instead of queueing behind it.
    """

    def __init__(self, coalesce: Callable[[T, T], T] | None = None, limit: int = MAX_PENDING) -> None:
        self._items: deque[T] = deque()
        self._coalesce = coalesce
        self._limit = limit
        self.dropped = 0

    def post(self, item: T) -> None:
        if self._coalesce is not None and self._items:
            self._items[-1] = self._coalesce(self._items[-1], item)
            return
        self._items.append(item)
        while len(self._items) > self._limit:
            self._items.popleft()
            self.dropped += 1

    def take(self) -> T | None:
        return self._items.popleft() if self._items else None

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


#: Threads of the process-wide callback pool (docs/client.md, "Callbacks").
POOL_SIZE = 4


class CallbackPool:
    """At most ``size`` daemon threads running the callbacks that have work, one run of one callback at a time.

    Threads start on demand (the first when a callback is registered, so thread creation stays out of the first
    change's latency; another only when work is queued and every thread is inside a callback) and then wait on a
    condition: no polling.
    """

    def __init__(self, size: int = POOL_SIZE, name: str = "configd-callbacks") -> None:
        self.size = size
        self._name = name
        self._cond = threading.Condition()
        self._ready: deque[CallbackWorker[Any]] = deque()
        self._threads: list[threading.Thread] = []
        self._waiting = 0  # threads blocked in _next(), ready to take work

    @property
    def threads(self) -> int:
        return len(self._threads)

    def prestart(self) -> None:
        with self._cond:
            if not self._threads:
                self._start_thread()

    def submit(self, worker: CallbackWorker[Any]) -> None:
        with self._cond:
            self._ready.append(worker)
            if self._waiting < len(self._ready) and len(self._threads) < self.size:
                self._start_thread()
            self._cond.notify()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _next(self) -> CallbackWorker[Any]:
        with self._cond:
            self._waiting += 1
            while not self._ready:
                self._cond.wait()
            self._waiting -= 1
            return self._ready.popleft()

    def _run(self) -> None:
        while True:
            self._next().run_once()

    def after_fork_in_child(self) -> None:
        """In a forked child: no thread survived, and queued work is the parent's (see CallbackWorker)."""
        self._cond = threading.Condition()
        self._ready = deque()
        self._threads = []
        self._waiting = 0


#: The one pool of the process (``os.register_at_fork`` below resets it in a forked child).
POOL = CallbackPool()


class CallbackWorker(Generic[T]):
    """One callback and its :class:`Mailbox`, run by the pool: at most once at a time, items in posted order.

    ``_scheduled`` is True from the moment the worker is queued in the pool until a run finds its mailbox empty:
    a worker is never queued twice, so no two threads ever run the same callback.
    """

    def __init__(
        self,
        callback: Callable[[T], object],
        mailbox: Mailbox[T],
        name: str,
        pool: CallbackPool | None = None,
        on_raise: RaiseHook[T] | None = None,
    ) -> None:
        self.callback = callback
        self._mailbox = mailbox
        self._name = name
        self._pool = pool if pool is not None else POOL
        self._on_raise = on_raise
        self._cond = threading.Condition()
        self._scheduled = False
        self._busy = False
        self._closed = False

    def start(self) -> None:
        """Make sure the pool has a thread before the first item (thread creation off the first change's path)."""
        self._pool.prestart()

    def post(self, item: T) -> None:
        with self._cond:
            if self._closed:
                return
            self._mailbox.post(item)
            if self._scheduled:
                return  # queued or running: the run in progress picks it up (coalesced, for changes)
            self._scheduled = True
        self._pool.submit(self)

    def run_once(self) -> None:
        """Deliver one item (on a pool thread), then queue this worker again if more arrived meanwhile."""
        with self._cond:
            item = None if self._closed else self._mailbox.take()
            if item is None:
                self._scheduled = False
                self._cond.notify_all()
                return
            self._busy = True
        self._call(item)
        with self._cond:
            self._busy = False
            again = not self._closed and len(self._mailbox) > 0
            self._scheduled = again
            if not again:
                self._cond.notify_all()
        if again:
            self._pool.submit(self)  # behind the others: one callback with a stream of work cannot starve them

    def _call(self, item: T) -> None:
        call_reporting(self.callback, item, self._on_raise)

    def on_callback_error(self, item: T, exc: Exception) -> None:
        callback_raised(self.callback, item, exc, self._on_raise)

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until every posted item has been handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or not self._scheduled, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._mailbox.clear()
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        """In a forked child: nothing queued, running or pending (the next :meth:`post` schedules it anew).

        What was pending at the fork is the parent's to deliver: a version applied before the fork is an event
        in the parent only, so each process sees each change once.
        """
        self._cond = threading.Condition()
        self._scheduled = False
        self._busy = False
        self._mailbox.clear()


class Dispatcher(Generic[T]):
    """The callbacks of one LiveSettings, all fed the same items, run by the process's :class:`CallbackPool`.

    ``on_raise(callback, item, exc)`` is called (on the pool thread) after a callback raised ``exc`` on ``item``.

    Callbacks added with ``inline=True`` are not posted to the pool: :meth:`deliver_inline` runs them on the
    caller's thread (the watcher's, for a change), in the order of :meth:`sequence` numbers. An item whose number
    is below one already delivered is dropped, not delivered late: versions still arrive in increasing order,
    each at most once, and the last one always arrives (docs/client.md, "Callbacks on the watcher thread").
    """

    def __init__(
        self,
        name: str,
        coalesce: Callable[[T, T], T] | None = None,
        *,
        pool: CallbackPool | None = None,
        on_raise: RaiseHook[T] | None = None,
    ) -> None:
        self._name = name
        self._coalesce = coalesce
        self._pool = pool if pool is not None else POOL
        self._on_raise = on_raise
        self._lock = threading.Lock()
        self._workers: tuple[CallbackWorker[T], ...] = ()
        self._inline: tuple[Callable[[T], object], ...] = ()
        self._delivering = threading.RLock()  # one inline delivery at a time (RLock: a callback may offer again)
        self._issued = 0  # sequence numbers handed out by sequence()
        self._delivered = 0  # the highest sequence number delivered inline
        self._closed = False

    def add(self, callback: Callable[[T], object], *, inline: bool = False) -> None:
        if inline:
            with self._lock:
                if not self._closed:
                    self._inline = (*self._inline, callback)
            return
        worker = CallbackWorker(
            callback, Mailbox(self._coalesce), f"{self._name}-{len(self._workers)}", self._pool, self._on_raise
        )
        with self._lock:
            if self._closed:
                return
            self._workers = (*self._workers, worker)
        worker.start()

    def remove(self, callback: Callable[[T], object]) -> None:
        with self._lock:
            gone = [w for w in self._workers if w.callback == callback]
            self._workers = tuple(w for w in self._workers if w.callback != callback)
            self._inline = tuple(c for c in self._inline if c != callback)
        for worker in gone:
            worker.close()

    def emit(self, item: T) -> None:
        """Post ``item`` to every pooled callback (inline ones are run by :meth:`deliver_inline`)."""
        for worker in self._workers:
            worker.post(item)

    @property
    def has_inline(self) -> bool:
        return bool(self._inline)

    def sequence(self) -> int:
        """The next delivery number; the caller takes it in the same critical section that ordered the item."""
        with self._lock:
            self._issued += 1
            return self._issued

    def deliver_inline(self, number: int, item: T) -> None:
        """Run the inline callbacks on ``item`` on this thread, unless an item numbered higher was delivered."""
        with self._delivering:
            if number <= self._delivered:
                return
            self._delivered = number
            for callback in self._inline:
                call_reporting(callback, item, self._on_raise)

    def idle(self, timeout: float | None = None) -> bool:
        return all(worker.idle(timeout) for worker in self._workers)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, ()
            self._inline = ()
        for worker in workers:
            worker.close()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._delivering = threading.RLock()
        for worker in self._workers:
            worker.after_fork_in_child()


os.register_at_fork(after_in_child=POOL.after_fork_in_child)
