"""The one small interface every source of config documents implements: Consul, a local directory, the cache.

Like pydantic-settings' ``sources/providers`` (one small class per provider overriding one hook), each source
is one class — :class:`~._watcher.ConsulSource`, :class:`~._filesource.FileSource`,
:class:`~._cache.CacheSource` — and :class:`~._client.ConfigClient` starts every config the same way
(:meth:`ConfigClient._start`): read now, follow, wait for a first value on the LiveSettings' own condition.

A source never builds settings: it hands :class:`~._events.Document` objects to the LiveSettings it follows
(``offer``), reports what it cannot deliver (``report_error``) and whether it can reach its origin
(``set_reachable``). The LiveSettings decides what to apply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from configd_core.errors import NotFound

from ._events import Document, Origin

if TYPE_CHECKING:
    from ._live import LiveSettings


class ConfigSource(ABC):
    """Where documents come from. Only :meth:`read_now` is required; a source that changes overrides
    :meth:`follow` / :meth:`unfollow`, one with threads or connections :meth:`after_fork_in_child` and :meth:`close`."""

    origin: ClassVar[Origin]

    @abstractmethod
    def read_now(self, namespace: str, name: str) -> Document | None:
        """The current document, read without waiting; None when the config does not exist.

        Raises:
            ConsulUnavailable, ConsulPermissionDenied: the origin could not be read (the cache may stand in).
            ConfigdError: the origin holds something that is not a config document.
        """

    def follow(self, live: LiveSettings[Any]) -> None:  # noqa: B027  # a source that never changes needs nothing
        """Deliver every later version of ``live``'s config to it until :meth:`unfollow`."""

    def unfollow(self, live: LiveSettings[Any]) -> None:  # noqa: B027
        """Stop delivering to ``live``."""

    def missing(self, live: LiveSettings[Any], timeout: float, unreachable: Exception | None) -> Exception:
        """Why ``live`` got no first value within ``timeout`` (``unreachable``: what :meth:`read_now` raised)."""
        if live.last_error is not None:
            return live.last_error
        return NotFound(f"config {live.ref} does not exist ({self.origin}, waited {timeout}s)")

    def after_fork_in_child(self) -> None:  # noqa: B027
        """In a forked child (``os.register_at_fork``): own threads, locks and connections, and catch up."""

    def close(self) -> None:  # noqa: B027
        """Stop following; release threads and connections."""
