"""``configctl watch``: debounced file events from watchdog, as paths ready to push.

Editors save in bursts (truncate + write + close) or atomically (write a temp file, then rename it over the
target). Each event only marks its path "dirty"; a path is handed out once it has been quiet for ``quiet``
seconds, so one save is one push, and a temp file that was renamed away is simply gone by then.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

_PATH_EVENTS = {"created", "modified", "closed"}


class Debouncer:
    """Pure bookkeeping: which paths have been quiet long enough. Time is passed in, never read."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._last_seen: dict[Path, float] = {}

    def touch(self, path: Path, now: float) -> None:
        self._last_seen[path] = now

    def due(self, now: float) -> list[Path]:
        """Pop and return every path whose last event is at least ``quiet`` seconds old, oldest first."""
        ready = sorted((seen, path) for path, seen in self._last_seen.items() if now - seen >= self.quiet)
        for _, path in ready:
            del self._last_seen[path]
        return [path for _, path in ready]

    def next_deadline(self) -> float | None:
        return min(self._last_seen.values()) + self.quiet if self._last_seen else None


def event_path(event: FileSystemEvent) -> Path | None:
    """The file an event leaves changed: a rename's destination (atomic saves), else the path itself."""
    if event.is_directory:
        return None
    if event.event_type == "moved":
        raw = event.dest_path
    elif event.event_type in _PATH_EVENTS:
        raw = event.src_path
    else:
        return None
    return Path(raw.decode() if isinstance(raw, bytes) else raw)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: DirectoryWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event_path(event)
        if path is not None:
            self._watcher.touch(path)


class DirectoryWatcher:
    """Recursive watchdog observer feeding a Debouncer; ``wait_ready()`` blocks until paths are due."""

    def __init__(self, root: Path, *, quiet: float = 0.3) -> None:
        self.root = root
        self._debouncer = Debouncer(quiet)
        self._changed = threading.Condition()
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(root), recursive=True)

    def touch(self, path: Path) -> None:
        with self._changed:
            self._debouncer.touch(path, time.monotonic())
            self._changed.notify_all()

    def wait_ready(self, timeout: float = 1.0) -> list[Path]:
        """Paths that settled, waiting up to ``timeout`` seconds (an empty list lets the caller check for stop)."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                ready = self._debouncer.due(now)
                if ready or now >= end:
                    return ready
                deadline = self._debouncer.next_deadline()
                self._changed.wait(min(end, deadline if deadline is not None else end) - now)

    def start(self) -> DirectoryWatcher:
        self._observer.start()
        return self

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def __enter__(self) -> DirectoryWatcher:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
