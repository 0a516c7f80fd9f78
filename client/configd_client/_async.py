"""The asyncio flavour: AsyncConfigClient and AsyncLiveSettings, with the same semantics as the threaded ones.

It reuses the threaded watchers (one blocking query per namespace) and hands each event to the event loop
with ``call_soon_threadsafe``. Each callback gets its own task-fed mailbox on the loop: coroutine functions
are awaited there; plain functions run in a worker thread (``asyncio.to_thread``) so they cannot block the
loop. Order, at-most-once delivery and coalescing are as for :class:`LiveSettings`.

After ``os.fork()`` the loop a view was bound to is the parent's (a copy whose self-pipe is shared with the
parent): nothing is handed to it. The view binds to the child's own loop the first time it is used from a
running loop there — ``current``, ``await`` of any method, ``AsyncConfigClient.settings`` — and what arrived
before that is delivered then (coalesced, in order), so a loop created after the fork (uvicorn, gunicorn's
uvicorn worker) gets every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic_settings import BaseSettings

from . import _client
from ._client import DEFAULT_SETTINGS_TIMEOUT, ConfigClient
from ._dispatch import Mailbox, RaiseHook
from ._events import ChangeEvent, merge_events
from ._live import LiveSettings

log = logging.getLogger("configd_client")

S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T")

AsyncCallback = Callable[[T], Awaitable[object] | object]


class _LoopSubscription(Generic[T]):
    """Feeds one callback on the event loop, one item at a time, from any thread."""

    def __init__(
        self,
        callback: AsyncCallback[T],
        loop: asyncio.AbstractEventLoop | None,
        coalesce: Callable[[T, T], T] | None,
        on_raise: RaiseHook[T] | None = None,
    ) -> None:
        self.callback = callback
        self._on_raise = on_raise
        self._loop: asyncio.AbstractEventLoop | None = loop  # None: after a fork, until the child's loop binds
        self._mailbox: Mailbox[T] = Mailbox(coalesce)  # on the loop's thread only
        self._held: Mailbox[T] = Mailbox(coalesce)  # posted while no loop of this process is bound
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def post_threadsafe(self, item: T) -> None:
        if self._closed:
            return
        with self._lock:  # one poster per subscription (its CallbackWorker); the lock orders it with bind()
            if self._loop is None:
                self._held.post(item)
                return
            if self._loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._post, item)

    def after_fork_in_child(self) -> None:
        """The parent's loop, task and pending items are the parent's (it delivers them): hold until :meth:`bind`."""
        self._lock = threading.Lock()
        self._loop = None
        self._task = None
        self._mailbox.clear()
        self._held.clear()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on ``loop`` from now on, starting with what was held while no loop was bound."""
        with self._lock:
            if self._loop is not None:
                return
            self._loop = loop
            while (item := self._held.take()) is not None:
                loop.call_soon_threadsafe(self._post, item)

    def _post(self, item: T) -> None:
        if self._closed or self._loop is None:
            return
        self._mailbox.post(item)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        while (item := self._mailbox.take()) is not None:
            try:
                if inspect.iscoroutinefunction(self.callback):
                    await self.callback(item)
                else:
                    result = await asyncio.to_thread(self.callback, item)
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:
                log.exception("configd_client: callback %r raised", self.callback)
                if self._on_raise is not None:
                    self._on_raise(self.callback, item, exc)

    async def idle(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()


class AsyncLiveSettings(Generic[S]):
    """The asyncio view of a :class:`LiveSettings`: same ``current``/``version``/``stale``, async callbacks."""

    def __init__(self, live: LiveSettings[S], loop: asyncio.AbstractEventLoop) -> None:
        self.live = live
        self._loop: asyncio.AbstractEventLoop | None = loop  # None: after a fork, until used from the child's loop
        self._subscriptions: list[_LoopSubscription[Any]] = []
        _VIEWS.add(self)

    def _bind(self) -> None:
        """After a fork, adopt the running loop of this process (one attribute test otherwise)."""
        if self._loop is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop yet: events are held until the view is used from one
            return
        self._loop = loop
        for subscription in self._subscriptions:
            subscription.bind(loop)

    def _bound_loop(self) -> asyncio.AbstractEventLoop | None:
        self._bind()
        return self._loop

    def _after_fork_in_child(self) -> None:
        self._loop = None
        for subscription in self._subscriptions:
            subscription.after_fork_in_child()

    @property
    def ref(self) -> str:
        return self.live.ref

    @property
    def current(self) -> S:
        self._bind()
        return self.live.current

    @property
    def version(self) -> int:
        self._bind()
        return self.live.version

    @property
    def stale(self) -> bool:
        self._bind()
        return self.live.stale

    @property
    def rollout(self) -> str | None:
        """The rollout whose candidate runs here, or None (:attr:`LiveSettings.rollout`)."""
        self._bind()
        return self.live.rollout

    def report_unhealthy(self, reason: str) -> bool:
        """Report the running candidate as unhealthy (:meth:`LiveSettings.report_unhealthy`)."""
        return self.live.report_unhealthy(reason)

    def on_change(self, callback: AsyncCallback[ChangeEvent[S]]) -> AsyncCallback[ChangeEvent[S]]:
        """``callback(event)`` (a coroutine function or a plain one) after each applied version.

        Callbacks registered before a fork run in the child too, on the child's loop (see the module docstring).
        """
        subscription: _LoopSubscription[ChangeEvent[S]] = _LoopSubscription(
            callback, self._bound_loop(), merge_events, self.live._change_callback_raised
        )
        self._subscriptions.append(subscription)
        self.live.on_change(subscription.post_threadsafe)
        return callback

    def on_error(self, callback: AsyncCallback[Exception]) -> AsyncCallback[Exception]:
        """``callback(exc)`` when a new version cannot be applied."""
        subscription: _LoopSubscription[Exception] = _LoopSubscription(callback, self._bound_loop(), None)
        self._subscriptions.append(subscription)
        self.live.on_error(subscription.post_threadsafe)
        return callback

    async def wait_for_version(self, version: int, timeout: float | None = None) -> bool:
        self._bind()
        return await asyncio.to_thread(self.live.wait_for_version, version, timeout)

    async def callbacks_idle(self, timeout: float | None = None) -> None:
        """Wait until every callback has handled what was posted to it."""
        self._bind()
        await asyncio.to_thread(self.live.callbacks_idle, timeout)
        await asyncio.sleep(0)  # let call_soon_threadsafe hand-offs run
        for subscription in self._subscriptions:
            await subscription.idle()

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        self.live.close()


# Every view, weakly, for the fork hook.
_VIEWS: weakref.WeakSet[AsyncLiveSettings[Any]] = weakref.WeakSet()


def _after_fork() -> None:
    for view in list(_VIEWS):
        view._after_fork_in_child()


_client.first_in_forked_child(_after_fork)


class AsyncConfigClient:
    """:class:`ConfigClient` for asyncio code: ``await client.settings(...)``, coroutine callbacks allowed.

    Takes the same arguments as :class:`ConfigClient`. Use ``async with`` or ``await client.aclose()``.
    """

    def __init__(self, address: str | None = None, **options: Any) -> None:
        self.sync = ConfigClient(address, **options)
        self._lives: list[AsyncLiveSettings[Any]] = []

    async def settings(
        self,
        model: type[S],
        ref: str,
        *,
        timeout: float = DEFAULT_SETTINGS_TIMEOUT,
        overrides: Mapping[str, Any] | None = None,
    ) -> AsyncLiveSettings[S]:
        """Like :meth:`ConfigClient.settings`, without blocking the event loop while it waits."""
        for earlier in self._lives:
            earlier._bind()
        live = await asyncio.to_thread(self.sync.settings, model, ref, timeout=timeout, overrides=overrides)
        view = AsyncLiveSettings(live, asyncio.get_running_loop())
        self._lives.append(view)
        return view

    async def aclose(self) -> None:
        for view in self._lives:
            view.close()
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncConfigClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
