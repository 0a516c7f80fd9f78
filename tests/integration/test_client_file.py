"""configd_client's local file mode: the same API over <dir>/<ns>/<name>.json, hot-reloaded via watchdog."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from configd_client import ChangeEvent, ConfigClient, InvalidConfig, NotFound, ValidationFailed


class Search(BaseSettings):
    page_size: int = 10
    fuzzy: bool = False


def atomic_save(path: Path, data: object) -> None:
    """What vim, VS Code and friends do: write a temporary file beside the target, then rename it over."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


@pytest.mark.timeout(60)
def test_file_mode_follows_an_editor_style_atomic_save(tmp_path: Path) -> None:
    (tmp_path / "search").mkdir()
    config = tmp_path / "search" / "api.json"
    config.write_text(json.dumps({"page_size": 20}))
    with ConfigClient(source=f"file://{tmp_path}") as client:
        live = client.settings(Search, "search/api", timeout=5)
        assert (live.version, live.current.page_size, live.stale) == (1, 20, False)
        got = threading.Event()
        events: list[ChangeEvent[Search]] = []
        errors: list[Exception] = []
        live.on_change(lambda e: (events.append(e), got.set()))
        live.on_error(errors.append)

        started = time.perf_counter()
        atomic_save(config, {"page_size": 50, "fuzzy": True})
        assert got.wait(10), "no reload after an atomic-rename save"
        print(f"\nfile mode: save -> callback {(time.perf_counter() - started) * 1000:.0f} ms (debounce 50 ms)")
        assert live.version == 2 and live.current.page_size == 50
        assert events[0].changes == [("/fuzzy", False, True), ("/page_size", 20, 50)]

        got.clear()
        config.write_text("{not json")  # a half-typed save keeps the last good value
        assert live.wait_for_version(3, 1) is False
        atomic_save(config, {"page_size": "many"})  # valid JSON, fails the model
        deadline = time.monotonic() + 10
        while len(errors) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [type(e) for e in errors] == [InvalidConfig, ValidationFailed]
        assert live.version == 2 and live.current.page_size == 50

        atomic_save(config, {"page_size": 60, "fuzzy": True})
        assert got.wait(10)
        # Like Consul versions, every distinct content got a number, the rejected one included.
        assert live.current.page_size == 60 and live.version == 4
        assert live.callbacks_idle(10) and [e.version for e in events] == [2, 4]


@pytest.mark.timeout(30)
def test_file_mode_reports_a_missing_file(tmp_path: Path) -> None:
    with ConfigClient(source=f"file://{tmp_path}") as client, pytest.raises(NotFound):
        client.settings(Search, "search/absent", timeout=0.3)
