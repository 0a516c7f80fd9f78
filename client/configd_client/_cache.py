"""The last-known-good cache: each applied version written atomically to a local directory.

A process started while Consul is unreachable starts from here (``live.stale`` is True) and catches up when
Consul answers. Files are ``<dir>/<prefix>/<ns>/<name>.json``; a write is a temporary file in the same
directory, fsynced, then ``os.replace``d over the old one, so a crash leaves the old file or the new one.

Writing (and its fsync) is off the watch thread: :class:`CacheWriter` keeps the newest applied document per
config and writes it 1 to 1.5 s later, on a thread of its own. Not sooner: a push wakes every process of a host
at once, and their writes would take CPU and disk from the processes still applying that same change (the
random part spreads them). ``flush()`` (``settings()`` uses it for a first version) and ``close()`` write what
is pending at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import threading
from pathlib import Path

from configd_core.records import document_sha256

from ._events import Document
from ._providers import ConfigSource

log = logging.getLogger("configd_client")

CACHE_FORMAT = "configd.cache/1"
#: Seconds the writer waits after a document is submitted (times 1 to 1.5), so that it never competes with the
#: propagation of the change it records, and a burst of versions is one write.
DEFAULT_WRITE_DELAY = 1.0


def default_cache_dir() -> Path:
    """``CONFIGD_CACHE_DIR``, else ``$XDG_CACHE_HOME/configd``, else ``~/.cache/configd``."""
    explicit = os.environ.get("CONFIGD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "configd"


def _file_body(document: Document) -> bytes:
    """A cache file: the document's fields and its data, as JSON. The data's canonical bytes are written as they
    are when the source kept them (a large version: serialising megabytes again would cost more than the rest of
    the write); otherwise the data is serialised here."""
    fields = {
        "format": CACHE_FORMAT,
        "namespace": document.namespace,
        "name": document.name,
        "version": document.version,
        "sha256": document.sha256,
    }
    if document.canonical is None:
        return json.dumps({**fields, "data": document.data}, sort_keys=True, indent=1).encode()
    head = json.dumps(fields, sort_keys=True, indent=1).encode()
    return head[:-2] + b',\n "data": ' + document.canonical + b"\n}"


class LastKnownGoodCache:
    """Reads and writes cached versions under ``root/prefix``. Failures to write are the caller's to log."""

    def __init__(self, root: str | os.PathLike[str], prefix: str) -> None:
        self.root = Path(root) / prefix

    def path(self, namespace: str, name: str) -> Path:
        return self.root / namespace / f"{name}.json"

    def write(self, document: Document) -> Path:
        target = self.path(document.namespace, document.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{document.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_file_body(document))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

    def read(self, namespace: str, name: str) -> Document | None:
        """The cached document, or None when absent, unreadable or not matching its sha256."""
        try:
            body = json.loads(self.path(namespace, name).read_bytes())
            data = body["data"]
            if (
                body.get("format") != CACHE_FORMAT
                or not isinstance(data, dict)
                or document_sha256(data) != body["sha256"]
            ):
                return None
            return Document(namespace, name, int(body["version"]), str(body["sha256"]), data, "cache")
        except (OSError, ValueError, KeyError, TypeError):
            return None


class PendingWrites:
    """Documents waiting to be cached: the newest per config, never one older than already taken (pure).

    Versions of one config are submitted in the order they were applied; a document whose version is not
    above the highest submitted for its config (a duplicate from a second model on the same config, or a
    late start-up read) is dropped, so a newer file is never replaced by an older version.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], Document] = {}
        self._highest: dict[tuple[str, str], int] = {}

    def offer(self, document: Document) -> bool:
        """Queue ``document``, replacing an older pending one; False when it is not newer (dropped)."""
        key = (document.namespace, document.name)
        highest = self._highest.get(key)
        if highest is not None and document.version <= highest:
            return False
        self._highest[key] = document.version
        self._pending[key] = document
        return True

    def take(self) -> list[Document]:
        """Every pending document (and none is pending any more)."""
        taken, self._pending = list(self._pending.values()), {}
        return taken

    def __len__(self) -> int:
        return len(self._pending)


class CacheWriter:
    """Writes submitted documents to a :class:`LastKnownGoodCache` on its own thread (started lazily).

    Args:
        cache: where the documents go.
        delay: seconds between a submission and the write (times 1 to 1 + ``spread``, at random), to keep the
            write away from the moment a change propagates and to coalesce bursts (the newest version wins).
    """

    def __init__(self, cache: LastKnownGoodCache, delay: float = DEFAULT_WRITE_DELAY, spread: float = 0.5) -> None:
        self.cache = cache
        self.delay = delay
        self.spread = spread
        self._pending = PendingWrites()
        self._cond = threading.Condition()
        self._writing = False
        self._hurry = False  # flush() asked for the pending documents now, without waiting out the delay
        self._closed = False
        self._thread: threading.Thread | None = None
        self.written = 0  # files written so far (for tests and metrics)

    def submit(self, document: Document) -> None:
        """Queue ``document`` for writing; returns at once. Ignored once closed."""
        with self._cond:
            idle = len(self._pending) == 0
            if self._closed or not self._pending.offer(document):
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="configd-cache-writer", daemon=True)
                self._thread.start()
            elif idle:  # else the writer is already counting down to a batch that will include this one
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._pending) > 0)
                if len(self._pending) == 0:  # closed with nothing left to write
                    return
                if not self._closed and not self._hurry and self.delay > 0:
                    pause = self.delay * (1.0 + self.spread * random.random())
                    self._cond.wait_for(lambda: self._closed or self._hurry, timeout=pause)
                batch = self._pending.take()
                self._hurry = False
                self._writing = True
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _write(self, batch: list[Document]) -> None:
        for document in batch:
            try:
                self.cache.write(document)
                self.written += 1
            except OSError as exc:
                log.warning("configd_client: could not write the cache for %s: %s", document.ref, exc)
            except Exception:  # the writer thread must outlive a bug, or close() would wait for nothing
                log.exception("configd_client: could not write the cache for %s", document.ref)

    def flush(self, timeout: float | None = None) -> bool:
        """Write what is pending now (not after the delay) and wait until it is written or failed; False on timeout."""
        with self._cond:
            if len(self._pending) > 0:
                self._hurry = True
                self._cond.notify_all()
            return self._cond.wait_for(lambda: len(self._pending) == 0 and not self._writing, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending, then stop the thread. Later submissions are ignored."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def after_fork_in_child(self) -> None:
        """A forked child's own lock, no thread until its next submission, nothing pending.

        What was pending at the fork is the parent's to write (it holds the same versions); the highest version
        submitted per config is kept, so the child never writes an older one over it.
        """
        self._cond = threading.Condition()
        self._thread = None
        self._writing = False
        self._hurry = False
        self._pending.take()


class CacheSource(ConfigSource):
    """The last-known-good cache as a source: read when Consul does not answer at start-up; fed every applied
    version from Consul (written off the watch thread by a :class:`CacheWriter`)."""

    origin = "cache"

    def __init__(self, cache: LastKnownGoodCache, writer: CacheWriter | None = None) -> None:
        self.cache = cache
        self.writer = writer if writer is not None else CacheWriter(cache)

    @property
    def root(self) -> Path:
        return self.cache.root

    def read_now(self, namespace: str, name: str) -> Document | None:
        return self.cache.read(namespace, name)

    def keep(self, document: Document) -> None:
        """Queue an applied version for writing; returns at once."""
        self.writer.submit(document)

    def flush(self, timeout: float | None = None) -> bool:
        return self.writer.flush(timeout)

    def after_fork_in_child(self) -> None:
        self.writer.after_fork_in_child()

    def close(self) -> None:
        self.writer.close()
