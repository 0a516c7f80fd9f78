"""Schema patterns (configd.planning.patterns): the regex engine, Unicode property escapes, and a time limit that
fails one validation instead of hanging the worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from configd.planning.patterns import PATTERN_TIME_LIMIT, PatternTimeLimit, search
from configd.planning.validation import compile_schema, config_errors, schema_errors

CATASTROPHIC = "^(a|a)+$"  # exponential backtracking in both re and regex
EVIL_INPUT = "a" * 34 + "!"
# CPU time is what the engine limits; wall time on a loaded 2-core machine is up to a few times longer.
WALL_SLACK = 2.0


def _errors_and_cpu(schema: dict[str, Any], data: Any) -> tuple[list[Any], float, float]:
    validator = compile_schema(schema)
    wall, cpu = time.monotonic(), time.thread_time()
    errors = config_errors(validator, data)
    return errors, time.monotonic() - wall, time.thread_time() - cpu


def test_unicode_property_escapes_register_and_validate() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": r"^\p{L}+$"}},
        "patternProperties": {r"^\p{Lu}": {"type": "integer"}},
    }
    assert schema_errors(schema) == []
    validator = compile_schema(schema)
    assert config_errors(validator, {"name": "Zoë", "Éclair": 3}) == []
    found = config_errors(validator, {"name": "zoe1", "Éclair": "x"})
    assert [e.path for e in found] == ["/name", "/Éclair"]


def test_an_invalid_pattern_is_refused_at_registration() -> None:
    found = schema_errors({"type": "string", "pattern": "(unclosed"})
    assert [e.path for e in found] == ["/pattern"] and "regex" in found[0].message
    found = schema_errors({"type": "object", "patternProperties": {"[z-a]": {}}})
    assert found and found[0].path == "/patternProperties"


@pytest.mark.parametrize(
    ("schema", "data", "path"),
    [
        ({"type": "object", "properties": {"a": {"pattern": CATASTROPHIC}}}, {"a": EVIL_INPUT}, "/a"),
        ({"type": "array", "items": {"pattern": CATASTROPHIC}}, [EVIL_INPUT] * 50, "/0"),
        ({"type": "object", "patternProperties": {CATASTROPHIC: {}}}, {EVIL_INPUT: 1}, "/"),
        (  # jsonschema's helpers (additionalProperties beside patternProperties)
            {"type": "object", "patternProperties": {CATASTROPHIC: {}}, "additionalProperties": False},
            {EVIL_INPUT: 1},
            "/",
        ),
        (  # ... and unevaluatedProperties: only the helper matches the pattern here
            {"type": "object", "allOf": [{"patternProperties": {CATASTROPHIC: {}}}], "unevaluatedProperties": False},
            {EVIL_INPUT: 1},
            "/",
        ),
        ({"type": "object", "propertyNames": {"pattern": CATASTROPHIC}}, {EVIL_INPUT: 1}, "/"),
    ],
)
def test_a_catastrophic_pattern_fails_one_validation_within_the_limit(
    schema: dict[str, Any], data: Any, path: str
) -> None:
    errors, wall, cpu = _errors_and_cpu(schema, data)
    assert len(errors) == 1, errors
    assert errors[0].path == path
    assert "100 ms time limit" in errors[0].message and CATASTROPHIC in errors[0].message
    # Fifty array items share one budget: the whole validation stays within the limit, not 50 times it.
    assert cpu <= PATTERN_TIME_LIMIT + 0.05, cpu
    assert wall <= PATTERN_TIME_LIMIT * 5 + WALL_SLACK, wall


def test_the_same_pattern_on_harmless_input_is_just_a_match() -> None:
    validator = compile_schema({"type": "string", "pattern": CATASTROPHIC})
    assert config_errors(validator, "a" * 34) == []
    assert [e.message for e in config_errors(validator, "ab")] == [f"'ab' does not match {CATASTROPHIC!r}"]


def test_each_validation_gets_its_own_budget() -> None:
    validator = compile_schema({"type": "string", "pattern": CATASTROPHIC})
    for _ in range(2):
        assert "time limit" in config_errors(validator, EVIL_INPUT)[0].message
    assert config_errors(validator, "aaa") == []


def test_outside_a_validation_a_match_is_limited_too() -> None:
    started = time.thread_time()
    with pytest.raises(PatternTimeLimit):
        search(CATASTROPHIC, EVIL_INPUT)
    assert time.thread_time() - started <= PATTERN_TIME_LIMIT + 0.05


def test_matching_releases_the_gil() -> None:
    """Another thread keeps running while a catastrophic match runs (what keeps /healthz answering)."""
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.002)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.02)
        started = time.monotonic()
        with pytest.raises(PatternTimeLimit):
            search(CATASTROPHIC, "a" * 40 + "!")
        ended = time.monotonic()
    finally:
        stop.set()
        ticker.join()
    during = [t for t in ticks if started < t < ended]
    gaps = [b - a for a, b in zip([started, *during], [*during, ended], strict=True)]
    assert during, "the other thread never ran during the match"
    # Held for the whole match, the GIL would leave one gap as long as the match; the ticker's own scheduling on a
    # loaded machine can leave gaps of tens of ms, so the bound is relative to the match, not absolute.
    assert max(gaps) < 0.8 * (ended - started), (max(gaps), ended - started)


def test_a_match_longer_than_the_gil_held_slice_is_finished_with_the_gil_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A match first runs holding the GIL for GIL_HELD_SLICE; one that needs longer starts again, concurrently."""
    import regex

    from configd.planning import patterns

    calls: list[bool] = []
    real = regex.Pattern.search

    class Spy:
        def __init__(self, compiled: Any) -> None:
            self.compiled = compiled

        def search(self, text: str, **kwargs: Any) -> Any:
            calls.append(bool(kwargs.get("concurrent")))
            return self.compiled.search(text, **kwargs)

    monkeypatch.setattr(patterns, "compiled", lambda pattern: Spy(regex.compile(pattern)))
    assert not search(CATASTROPHIC, "a" * 16 + "!")  # ~8 ms of backtracking: past the slice, within the limit
    assert calls == [False, True]
    calls.clear()
    assert search("^[a-z][a-z0-9-]*$", "payments-events")  # the common case: once, holding the GIL
    assert calls == [False]
    assert real is regex.Pattern.search
