"""LiveSettings: one typed settings object kept current by a source, swapped per version, never mutated."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

from pydantic_settings import BaseSettings

from configd_core.errors import ConfigdError, ValidationFailed
from configd_core.records import FailureKind

from ._dispatch import Dispatcher
from ._events import Applied, ChangeEvent, Document, merge_events, plan_apply
from ._secrets import opened_data
from ._source import SettingsFactory

S = TypeVar("S", bound=BaseSettings)

ChangeCallback = Callable[[ChangeEvent[S]], object]
ErrorCallback = Callable[[Exception], object]
#: ``(live, rollout_id, kind, reason)``: a failure on a rollout's candidate, for the registration to report.
FailureHook = Callable[["LiveSettings[S]", str, FailureKind, str], None]


@dataclass(frozen=True)
class _Snapshot(Generic[S]):
    settings: S
    applied: Applied


class LiveSettings(Generic[S]):
    """A settings object that follows one config: ``current`` is rebound to a new object per version.

    Obtained from :meth:`ConfigClient.settings`; reading ``current`` is lock-free and always returns a
    complete, validated object. Callbacks run on the callback pool's threads, or inline on the watcher's when
    asked (see ``on_change``).
    """

    def __init__(
        self,
        factory: SettingsFactory[S],
        namespace: str,
        name: str,
        *,
        on_applied: Callable[[LiveSettings[S], Document], None] | None = None,
        on_failure: FailureHook[S] | None = None,
    ) -> None:
        self._factory = factory
        self.namespace = namespace
        self.name = name
        self._on_applied = on_applied
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._snapshot: _Snapshot[S] | None = None
        self._rejected: tuple[int, str] | None = None
        self._reachable = True
        self._closed = False
        self.last_error: Exception | None = None
        self._changes: Dispatcher[ChangeEvent[S]] = Dispatcher(
            f"configd-{self.ref}-change", merge_events, on_raise=self._change_callback_raised
        )
        self._errors: Dispatcher[Exception] = Dispatcher(f"configd-{self.ref}-error")

    # --- reading ----------------------------------------------------------------------------------
    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def model(self) -> type[S]:
        return self._factory.model

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def _require(self) -> _Snapshot[S]:
        snapshot = self._snapshot
        if snapshot is None:
            raise ConfigdError(f"{self.ref} has no value yet")
        return snapshot

    @property
    def current(self) -> S:
        """The settings object of the applied version (a new object per version; never mutated by configd)."""
        return self._require().settings

    @property
    def version(self) -> int:
        """The configd version ``current`` was built from (in file mode: a local revision counter)."""
        return self._require().applied.version

    @property
    def sha256(self) -> str:
        return self._require().applied.sha256

    @property
    def rollout(self) -> str | None:
        """The id of the rollout whose candidate ``current`` was built from; None when it is the config's head."""
        return self._require().applied.rollout

    @property
    def stale(self) -> bool:
        """True while running from the last-known-good cache, or while the source is unreachable."""
        snapshot = self._snapshot
        return snapshot is None or snapshot.applied.origin == "cache" or not self._reachable

    @property
    def reachable(self) -> bool:
        """False while the source reports that it cannot reach its origin (Consul)."""
        return self._reachable

    # --- callbacks --------------------------------------------------------------------------------
    @overload
    def on_change(self, callback: ChangeCallback[S], *, inline: bool = False) -> ChangeCallback[S]: ...

    @overload
    def on_change(self, *, inline: bool = False) -> Callable[[ChangeCallback[S]], ChangeCallback[S]]: ...

    def on_change(
        self, callback: ChangeCallback[S] | None = None, *, inline: bool = False
    ) -> ChangeCallback[S] | Callable[[ChangeCallback[S]], ChangeCallback[S]]:
        """Call ``callback(event)`` after each applied version, on a thread of the callback pool.

        Versions arrive in increasing order, each at most once; while the callback is busy, newer versions
        are coalesced into one event, so the last applied version always arrives. Usable as a decorator
        (``@live.on_change`` or ``@live.on_change(inline=True)``).
        The one exception is a rollout: a member that ran its candidate goes back to the head when the rollout
        is aborted, an event whose ``version`` is lower than its ``old_version``. A callback that raises while
        the candidate is applied (``event.rollout`` set) is reported as the rollout's failure.

        ``inline=True`` runs the callback on the thread that applied the version (the namespace's watcher) as
        soon as it is applied, with no hand-off to another thread: the change reaches it sooner, most of all
        on a busy machine where every thread woken waits for a core. The price: while it runs, no other config
        of the namespace is applied and the blocking query is not sent again, so it must be quick and never
        block (no I/O, no waiting for another version, no ``close()``). Nothing is lost meanwhile: the next
        answer carries whatever changed, but versions that came and went during the call are skipped.
        """
        if callback is None:

            def register(func: ChangeCallback[S]) -> ChangeCallback[S]:
                self._changes.add(func, inline=inline)
                return func

            return register
        self._changes.add(callback, inline=inline)
        return callback

    def on_error(self, callback: ErrorCallback) -> ErrorCallback:
        """Call ``callback(exc)`` when a new version cannot be applied (it fails the model, was deleted, …)."""
        self._errors.add(callback)
        return callback

    def remove_callback(self, callback: Callable[..., object]) -> None:
        self._changes.remove(callback)
        self._errors.remove(callback)

    def wait_for_version(self, version: int, timeout: float | None = None) -> bool:
        """Block until a version >= ``version`` is applied; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._snapshot is not None and self._snapshot.applied.version >= version, timeout
            )

    def wait_ready(self, timeout: float | None = None, *, until_unreachable: bool = False) -> bool:
        """Block until a first version is applied (True), the object is closed or ``timeout`` passes (False).

        With ``until_unreachable``, also return as soon as the source reports it cannot reach its origin (the
        client then tries the last-known-good cache): woken by :meth:`set_reachable`, no polling.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._snapshot is not None or self._closed or (until_unreachable and not self._reachable),
                timeout,
            )
            return self._snapshot is not None

    def callbacks_idle(self, timeout: float | None = None) -> bool:
        """Wait until every callback has handled what was posted to it (handy in tests and at shutdown)."""
        return self._changes.idle(timeout) and self._errors.idle(timeout)

    # --- fed by the sources -----------------------------------------------------------------------
    def offer(self, document: Document) -> bool:
        """Apply ``document`` if it is newer and passes the model; True when it was applied.

        Inline change callbacks (``on_change(..., inline=True)``) run here, after the lock is released."""
        inline: list[tuple[int, ChangeEvent[S]]] = []
        applied = self._offer(document, inline)
        for number, event in inline:
            self._changes.deliver_inline(number, event)
        return applied

    def _offer(self, document: Document, inline: list[tuple[int, ChangeEvent[S]]]) -> bool:
        with self._cond:
            if self._closed:
                return False
            old = self._snapshot
            applied = old.applied if old is not None else None
            key = (document.version, document.sha256)
            now = Applied(*key, document.origin, document.rollout)
            if not plan_apply(applied, document):
                if old is not None and self._confirms(old.applied, now):
                    # The source confirms the version held (cached, or a candidate whose rollout completed): no
                    # event, no longer stale or a candidate; the cache and registration hear of it as applied.
                    self._snapshot = _Snapshot(old.settings, now)
                    if self._on_applied is not None:
                        self._on_applied(self, document)
                return False
            if key == self._rejected:
                return False
            try:
                # Secrets are decrypted here and only here (the document stays encrypted everywhere else); a
                # missing or wrong key is a SecretUnreadable (a ValidationFailed): the last good settings stay.
                data = opened_data(document)
                new = self._factory.build(data, document.origin, f"{self.ref} v{document.version}")
            except ValidationFailed as exc:
                self._rejected = key
                self.last_error = exc
                self._errors.emit(exc)
                if document.rollout is not None:
                    self._failed(document.rollout, "rejected", str(exc))
                return False
            self._snapshot = _Snapshot(new, now)
            self._rejected = None
            if old is not None:
                event = ChangeEvent(
                    ref=self.ref,
                    old=old.settings,
                    new=new,
                    old_version=old.applied.version,
                    version=document.version,
                    rollout=document.rollout,
                )
                self._changes.emit(event)
                if self._changes.has_inline:  # numbered under the lock: the order versions were applied in
                    inline.append((self._changes.sequence(), event))
            self._cond.notify_all()
            # Inside the lock, so that the cache and the registration see versions in applied order (both
            # only queue the document for a thread of their own: no I/O here).
            if self._on_applied is not None:
                self._on_applied(self, document)
            return True

    @staticmethod
    def _confirms(held: Applied, offered: Applied) -> bool:
        """``offered`` is the version held, from a better place: the source instead of the cache, or the head
        instead of a rollout's candidate (the rollout completed)."""
        if (held.version, held.sha256) != (offered.version, offered.sha256):
            return False
        from_cache = held.origin == "cache" and offered.origin != "cache"
        return from_cache or (held.rollout is not None and offered.rollout is None)

    # --- rollouts -----------------------------------------------------------------------------------
    def report_unhealthy(self, reason: str) -> bool:
        """Report that the running version makes this instance unhealthy, as a failure of its rollout.

        Only a rollout's candidate can be reported (``rollout`` is not None): the failure is published with this
        instance's registration (kind ``unhealthy``, ``reason`` cut to 200 characters) and counts towards the
        rollout's failure threshold, which aborts it. Returns False, and does nothing, when the running version
        is not a candidate (no rollout, a non-member, a rollout already completed or aborted). With
        ``register=False`` it returns True but nothing is published.
        """
        snapshot = self._snapshot
        if snapshot is None or snapshot.applied.rollout is None:
            return False
        self._failed(snapshot.applied.rollout, "unhealthy", reason)
        return True

    def _failed(self, rollout_id: str, kind: FailureKind, reason: str) -> None:
        if self._on_failure is not None:
            self._on_failure(self, rollout_id, kind, reason)

    def _change_callback_raised(self, callback: Callable[..., object], event: ChangeEvent[S], exc: Exception) -> None:
        if event.rollout is not None:
            name = getattr(callback, "__qualname__", None) or repr(callback)
            self._failed(event.rollout, "callback", f"{name}: {type(exc).__name__}: {exc}")

    def report_error(self, exc: Exception) -> None:
        self.last_error = exc
        self._errors.emit(exc)

    def set_reachable(self, reachable: bool) -> None:
        with self._cond:
            self._reachable = reachable
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._changes.close()
        self._errors.close()

    def after_fork_in_child(self) -> None:
        """In a forked child: own locks; callbacks stay registered, with nothing pending (see Dispatcher)."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._changes.after_fork_in_child()
        self._errors.after_fork_in_child()

    def __repr__(self) -> str:
        snapshot = self._snapshot
        version = snapshot.applied.version if snapshot else None
        return f"<LiveSettings {self.model.__name__} {self.ref} v{version}{' stale' if self.stale else ''}>"
