"""What the SDK hands around: a config document from a source, the applied state, and the ChangeEvent.

:func:`plan_apply` decides, without I/O, whether a document should replace what a LiveSettings holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic_settings import BaseSettings

from configd_core.diff import diff_json

S = TypeVar("S", bound=BaseSettings)

Origin = Literal["consul", "cache", "file"]


@dataclass(frozen=True)
class Document:
    """One version of a config's data as a source delivered it (not yet validated by any model)."""

    namespace: str
    name: str
    version: int
    sha256: str
    data: dict[str, Any]
    origin: Origin
    #: The rollout id when this document is a rollout's candidate (offered to the rollout's members only).
    rollout: str | None = None
    #: The canonical JSON of ``data`` when the source read exactly those bytes and checked them against
    #: ``sha256`` (a large version from Consul), else None: the secret-marker check and the cache use it
    #: instead of serialising ``data`` again.
    canonical: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ChangeEvent(Generic[S]):
    """A new version was applied: ``old`` and ``new`` settings objects and what changed between them.

    ``changes`` lists ``(json_pointer, old_value, new_value)`` for every changed leaf of the settings
    objects (``model_dump(mode="json")``, so env overrides and defaults are taken into account). When a
    burst of versions is coalesced, ``old``/``old_version`` are what this callback saw last and
    ``changes`` spans every skipped version.

    ``changes`` is computed on first access (on the thread of the callback that asks): dumping and diffing two
    settings objects is most of the work of applying a large document, and a callback that does not look at
    it does not pay for it. Both objects are never mutated, so the answer is the same whenever it is asked.
    """

    ref: str
    old: S
    new: S
    old_version: int
    version: int
    _changes: list[tuple[str, Any, Any]] | None = field(default=None, repr=False, compare=False)
    #: The rollout id when ``new`` was built from a rollout's candidate, else None.
    rollout: str | None = None

    @property
    def changes(self) -> list[tuple[str, Any, Any]]:
        found = self._changes
        if found is None:
            # Two callbacks asking at once may both compute it: the same list, and one reference rebound.
            found = settings_changes(self.old, self.new)
            object.__setattr__(self, "_changes", found)
        return found

    @property
    def changed_paths(self) -> list[str]:
        return [path for path, _, _ in self.changes]


def settings_changes(old: BaseSettings, new: BaseSettings) -> list[tuple[str, Any, Any]]:
    """``(json_pointer, old, new)`` for every leaf that differs between two settings objects."""
    return [c.as_tuple() for c in diff_json(old.model_dump(mode="json"), new.model_dump(mode="json"))]


def merge_events(first: ChangeEvent[S], second: ChangeEvent[S]) -> ChangeEvent[S]:
    """Coalesce two pending events of one callback into one spanning both (its changes computed when asked)."""
    return ChangeEvent(
        ref=second.ref,
        old=first.old,
        new=second.new,
        old_version=first.old_version,
        version=second.version,
        rollout=second.rollout,
    )


@dataclass(frozen=True)
class Applied:
    """Which version a LiveSettings holds, and whether its source has confirmed it."""

    version: int
    sha256: str
    origin: Origin
    rollout: str | None = None  # the rollout whose candidate this is, if any


def plan_apply(applied: Applied | None, document: Document) -> bool:
    """Whether ``document`` should replace the applied version (validation comes after).

    - nothing applied yet: yes;
    - the same version and content: no (a wake-up is only "maybe changed");
    - applied from the last-known-good cache: the source is the truth, take any different version;
    - applied from a rollout's candidate: take any different document that is not that rollout's, even a lower
      version (a member returns to the head when the rollout is aborted, or runs a later rollout's candidate);
    - otherwise only a higher version: callbacks see versions in increasing order.
    """
    if applied is None:
        return True
    if (document.version, document.sha256) == (applied.version, applied.sha256):
        return False
    if applied.origin == "cache" and document.origin != "cache":
        return True
    if applied.rollout is not None and document.rollout != applied.rollout:
        return True
    return document.version > applied.version
