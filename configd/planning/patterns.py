"""Schema ``pattern`` / ``patternProperties`` evaluated by the ``regex`` engine under a time limit. Pure, no I/O.

Why not ``re``: Python's ``re`` has no time limit and holds the GIL while it backtracks, so one schema with a
catastrophic pattern (``^(a+)+$`` against 34 a's and a ``!``) held a push for minutes and the whole server with it
(``/healthz`` unanswered, SIGTERM ignored because the signal handler needs the GIL). It also refuses the Unicode
property escapes (``\\p{L}``) that Draft 2020-12 asks validators to support.

``regex`` supports both: ``timeout=`` aborts a match (it counts CPU time, so under CPU contention the wall time of
an aborted match is longer), and ``concurrent=True`` releases the GIL while it matches, so other requests (and the
signal handlers) keep running meanwhile. Releasing the GIL is not free, though: with other threads running, taking
it back waits for one of them to let go (measured ~160 µs a match beside one busy thread, against ~1 µs for the
match itself). So a match first runs holding the GIL for at most :data:`GIL_HELD_SLICE` seconds, far below the
interpreter's 5 ms switch interval; only a match that needs longer (rare: a pathological pattern or a long text)
starts again with the GIL released, on what is left of the budget.

One validation gets :data:`PATTERN_TIME_LIMIT` seconds of pattern matching in all (a budget, not a per-match
limit: ten thousand array items each 90 ms short of a per-match limit would still hang a worker). A match that
exhausts the budget fails that validation: the ``pattern``/``patternProperties`` keywords report it as an error at
the instance's path; anywhere else jsonschema matches a pattern (``additionalProperties`` beside
``patternProperties``, ``unevaluatedProperties``) it raises :class:`PatternTimeLimit`, which
:func:`configd.planning.validation.config_errors` reports as an error of the whole document.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import regex
from jsonschema import _utils as jsonschema_utils
from jsonschema.exceptions import ValidationError

PATTERN_TIME_LIMIT = 0.1
"""Seconds of pattern matching one validation may spend (the issue's "≤ 100 ms")."""

# Without a budget (a bare jsonschema call outside config_errors), each match still gets the whole limit.
_MIN_TIMEOUT = 0.001

GIL_HELD_SLICE = 0.001
"""Seconds a match may run holding the GIL before it starts again with the GIL released (``concurrent=True``)."""


class PatternTimeLimit(Exception):
    """A pattern match ran out of the validation's time budget (raised where no path can be reported)."""

    def __init__(self, pattern: str) -> None:
        super().__init__(time_limit_message(pattern))
        self.pattern = pattern


def time_limit_message(pattern: str) -> str:
    return (
        f"pattern {pattern!r} took longer than configd's {round(PATTERN_TIME_LIMIT * 1000)} ms time limit for "
        "patterns (catastrophic backtracking?); simplify the pattern in the schema"
    )


@dataclass
class _Budget:
    remaining: float
    exhausted: bool = False


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("configd_pattern_budget", default=None)


@contextlib.contextmanager
def pattern_budget(seconds: float = PATTERN_TIME_LIMIT) -> Iterator[None]:
    """Give the validations inside this block ``seconds`` of pattern matching in all."""
    token = _budget.set(_Budget(seconds))
    try:
        yield
    finally:
        _budget.reset(token)


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    """The compiled pattern (``regex.error`` when it does not compile). V0: ``re``-compatible syntax."""
    return regex.compile(pattern)


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text`` (JSON Schema patterns are unanchored).

    Raises PatternTimeLimit when the match exhausts the budget (or, outside a budget, takes longer than the limit).
    """
    budget = _budget.get()
    if budget is not None and budget.exhausted:
        raise PatternTimeLimit(pattern)
    allowed = max(budget.remaining if budget is not None else PATTERN_TIME_LIMIT, _MIN_TIMEOUT)
    started = time.thread_time()
    compiled_pattern = compiled(pattern)
    try:
        try:
            return compiled_pattern.search(text, timeout=min(allowed, GIL_HELD_SLICE)) is not None
        except TimeoutError:
            if allowed <= GIL_HELD_SLICE:
                raise
        left = max(allowed - (time.thread_time() - started), _MIN_TIMEOUT)
        return compiled_pattern.search(text, timeout=left, concurrent=True) is not None
    except TimeoutError:
        if budget is not None:
            budget.exhausted = True
        raise PatternTimeLimit(pattern) from None
    finally:
        if budget is not None:
            budget.remaining -= time.thread_time() - started
            if budget.remaining <= 0:
                budget.exhausted = True


def _spent() -> bool:
    budget = _budget.get()
    return budget is not None and budget.exhausted


def _checked(pattern: str, text: str) -> ValidationError | bool:
    """The match, or the time-limit error to report at the instance's path.

    Once the budget is spent the validation has already failed with that error, so later patterns are skipped
    (counted as matching) rather than reported again.
    """
    if _spent():
        return True
    try:
        return search(pattern, text)
    except PatternTimeLimit as exc:
        return ValidationError(str(exc))


def pattern_keyword(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``pattern``, as jsonschema's own but with :func:`search`."""
    if not validator.is_type(instance, "string"):
        return
    found = _checked(patrn, instance)
    if isinstance(found, ValidationError):
        yield found
    elif not found:
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def pattern_properties_keyword(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """``patternProperties``, as jsonschema's own but with :func:`search`."""
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in pattern_properties.items():
        for key, value in instance.items():
            found = _checked(patrn, key)
            if isinstance(found, ValidationError):
                yield found
                return
            if found:
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


class _TimedRe:
    """What jsonschema's helpers call as ``re`` (only ``re.search``): :func:`search` under the budget."""

    @staticmethod
    def search(pattern: str, text: str) -> bool:
        return True if _spent() else search(pattern, text)


def _install() -> None:
    # jsonschema's `additionalProperties` (beside `patternProperties`) and `unevaluatedProperties` match patterns
    # through helpers in jsonschema._utils, which call the module-global `re.search`; only that name is used there
    # (tests/unit/test_patterns.py checks both paths, so a jsonschema that changes this fails a test, not silently).
    jsonschema_utils.re = _TimedRe  # type: ignore[attr-defined]


_install()
