"""Local file mode: ``<dir>/<ns>/<name>.json`` instead of Consul, hot-reloaded through watchdog.

The whole directory is watched (recursively), because editors save by writing a temporary file and
renaming it over the original: the event then names the temporary file as its source and the config file
as its destination, and a watch on the file itself would be lost with the old inode. Bursts of events for
one file (create + modify + move) are debounced into one read. A file's version is a local revision
counter: 1 for the first content read, +1 for each different content (sha256 of its canonical JSON).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from configd_core.errors import ConfigdError, InvalidConfig, NotFound
from configd_core.records import canonical_json, sha256_hex

from ._events import Document
from ._live import LiveSettings
from ._providers import ConfigSource

log = logging.getLogger("configd_client")

DEFAULT_DEBOUNCE_SECONDS = 0.05
ConfigKey = tuple[str, str]
# watchdog event types that can mean new content ("closed" is a close after writing).
_CHANGE_EVENTS = frozenset({"created", "modified", "moved", "closed", "deleted"})


class DebounceQueue:
    """Pending reads, each due ``delay`` after the last event for its key (pure; the caller locks)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._due: dict[ConfigKey, float] = {}

    def touch(self, key: ConfigKey, now: float) -> None:
        self._due[key] = now + self.delay

    def next_deadline(self) -> float | None:
        return min(self._due.values()) if self._due else None

    def pop_due(self, now: float) -> list[ConfigKey]:
        ready = sorted((due, key) for key, due in self._due.items() if due <= now)
        for _, key in ready:
            del self._due[key]
        return [key for _, key in ready]


def config_key_of(root: Path, path: str | bytes) -> ConfigKey | None:
    """``(ns, name)`` when ``path`` is ``<root>/<ns>/<name>.json``, else None."""
    text = path.decode() if isinstance(path, bytes) else path
    try:
        relative = Path(text).resolve().relative_to(root)
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) != 2 or not parts[1].endswith(".json") or parts[1].startswith("."):
        return None
    return parts[0], parts[1][: -len(".json")]


class FileSource(ConfigSource):
    """Serves configs from a directory and follows edits with one watchdog observer and one worker thread."""

    origin = "file"

    def __init__(self, root: str | Path, *, debounce: float = DEFAULT_DEBOUNCE_SECONDS) -> None:
        self.root = Path(root).resolve()
        self._queue = DebounceQueue(debounce)
        self._cond = threading.Condition()
        self._targets: dict[ConfigKey, tuple[LiveSettings[Any], ...]] = {}
        self._revisions: dict[ConfigKey, tuple[int, str]] = {}
        self._read_lock = threading.Lock()
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def path(self, namespace: str, name: str) -> Path:
        return self.root / namespace / f"{name}.json"

    def read_now(self, namespace: str, name: str) -> Document | None:
        """The file's current document (None when it does not exist); InvalidConfig when it is not a JSON object."""
        path = self.path(namespace, name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigdError(f"cannot read {path}: {exc}") from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidConfig(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidConfig(f"{path} must hold a JSON object")
        sha = sha256_hex(canonical_json(data))
        with self._read_lock:
            version, last_sha = self._revisions.get((namespace, name), (0, ""))
            if sha != last_sha:
                version += 1
                self._revisions[(namespace, name)] = (version, sha)
        return Document(namespace, name, version, sha, data, "file")

    def follow(self, live: LiveSettings[Any]) -> None:
        if not self.root.is_dir():
            raise ConfigdError(f"file source {self.root} is not a directory")
        with self._cond:
            key = (live.namespace, live.name)
            self._targets[key] = (*self._targets.get(key, ()), live)
            if self._thread is None:
                self._start()

    def unfollow(self, live: LiveSettings[Any]) -> None:
        with self._cond:
            key = (live.namespace, live.name)
            self._targets[key] = tuple(t for t in self._targets.get(key, ()) if t is not live)

    def missing(self, live: LiveSettings[Any], timeout: float, unreachable: Exception | None) -> Exception:
        if live.last_error is not None:
            return live.last_error
        return NotFound(f"no file {self.path(live.namespace, live.name)} (waited {timeout}s)")

    def _start(self) -> None:
        self._start_observer()
        self._thread = threading.Thread(target=self._run, name="configd-files", daemon=True)
        self._thread.start()

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in _CHANGE_EVENTS:  # our own reads cause "opened"/"closed_no_write"
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                watcher._touch([key for p in paths if p and (key := config_key_of(watcher.root, p)) is not None])

        observer = Observer()
        observer.schedule(_Handler(), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _touch(self, keys: list[ConfigKey], now: Callable[[], float] = time.monotonic) -> None:
        if not keys:
            return
        with self._cond:
            for key in keys:
                if key in self._targets:
                    self._queue.touch(key, now())
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                deadline = self._queue.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                if timeout is None or timeout > 0:
                    self._cond.wait(timeout)
                    continue
                due = self._queue.pop_due(time.monotonic())
                targets = {key: self._targets.get(key, ()) for key in due}
            for (namespace, name), lives in targets.items():
                self._reload(namespace, name, lives)

    def _reload(self, namespace: str, name: str, lives: tuple[LiveSettings[Any], ...]) -> None:
        try:
            document = self.read_now(namespace, name)
        except ConfigdError as exc:
            for live in lives:
                live.report_error(exc)
            return
        if document is None:  # removed, or between an editor's unlink and rename: keep the last good value
            return
        for live in lives:
            live.offer(document)

    def after_fork_in_child(self) -> None:
        """A forked child's own observer, worker and locks; every followed file is read again at once.

        The parent's observer threads did not survive the fork: the object is dropped (stopping it would wait
        for threads that are not there).
        """
        self._cond = threading.Condition()
        self._read_lock = threading.Lock()
        self._observer = None
        self._thread = None
        if self._closed or not self._targets:
            return
        self._start()
        self._touch(list(self._targets), now=lambda: 0.0)  # due at once: catch up with edits made meanwhile

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
