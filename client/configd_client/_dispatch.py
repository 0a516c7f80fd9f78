"""Callback delivery off the watch thread: one mailbox and one worker thread per registered callback.

A slow or raising callback therefore never stalls the watcher, nor any other callback. Each callback sees
versions in increasing order and each version at most once; while a callback is busy, the change events
queued for it are coalesced into one (:func:`merge_events`), so under a burst it may skip intermediate
versions, but the last applied version always reaches it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("configd_client")

T = TypeVar("T")

#: Told of each exception a callback raised, with the item it was handling (rollouts count them as failures).
RaiseHook = Callable[[Callable[[T], object], T, Exception], None]

#: Errors queued for one callback beyond this are dropped, oldest first.
MAX_PENDING = 100


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


class CallbackWorker(Generic[T]):
    """Runs one callback on its own daemon thread, fed through a :class:`Mailbox`.

    The thread sleeps on a condition (no polling) and :meth:`post` notifies it, so an item is handed over
    as soon as it is posted. :meth:`start` creates the thread ahead of the first item (a Dispatcher does
    so when the callback is added), keeping thread creation out of the first change's latency.
    """

    def __init__(
        self, callback: Callable[[T], object], mailbox: Mailbox[T], name: str, on_raise: RaiseHook[T] | None = None
    ) -> None:
        self.callback = callback
        self._mailbox = mailbox
        self._name = name
        self._on_raise = on_raise
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def post(self, item: T) -> None:
        with self._cond:
            if self._closed:
                return
            self._mailbox.post(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._mailbox) == 0:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                if self._closed:
                    return
                item = self._mailbox.take()
                self._busy = True
            try:
                self.callback(item)  # type: ignore[arg-type]
            except Exception as exc:  # a user callback's failure must not end delivery to it
                log.exception("configd_client: callback %r raised", self.callback)
                self._raised(item, exc)  # type: ignore[arg-type]

    def _raised(self, item: T, exc: Exception) -> None:
        if self._on_raise is None:
            return
        try:
            self._on_raise(self.callback, item, exc)
        except Exception:  # the hook only reports: it must not end delivery either
            log.exception("configd_client: could not report the failure of callback %r", self.callback)

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until every posted item has been handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or (not self._busy and len(self._mailbox) == 0), timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        """In a forked child: no thread (the next :meth:`post` starts one) and nothing pending.

        What was pending at the fork is the parent's to deliver: a version applied before the fork is an event
        in the parent only, so each process sees each change once.
        """
        self._cond = threading.Condition()
        self._thread = None
        self._busy = False
        self._mailbox.clear()


class Dispatcher(Generic[T]):
    """The workers of one LiveSettings: one per callback, all fed the same items."""

    def __init__(
        self, name: str, coalesce: Callable[[T, T], T] | None = None, on_raise: RaiseHook[T] | None = None
    ) -> None:
        self._name = name
        self._coalesce = coalesce
        self._on_raise = on_raise
        self._lock = threading.Lock()
        self._workers: tuple[CallbackWorker[T], ...] = ()
        self._closed = False

    def add(self, callback: Callable[[T], object]) -> None:
        worker = CallbackWorker(
            callback, Mailbox(self._coalesce), f"{self._name}-{len(self._workers)}", self._on_raise
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
        for worker in gone:
            worker.close()

    def emit(self, item: T) -> None:
        for worker in self._workers:
            worker.post(item)

    def idle(self, timeout: float | None = None) -> bool:
        return all(worker.idle(timeout) for worker in self._workers)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, ()
        for worker in workers:
            worker.close()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        for worker in self._workers:
            worker.after_fork_in_child()
