"""The last-known-good cache: each applied version written atomically to a local directory.

A process started while Consul is unreachable starts from here (``live.stale`` is True) and catches up when
Consul answers. Files are ``<dir>/<prefix>/<ns>/<name>.json``; a write is a temporary file in the same
directory, fsynced, then ``os.replace``d over the old one, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from ._events import Document
from ._records import canonical_json, sha256_hex

CACHE_FORMAT = "configd.cache/1"


def default_cache_dir() -> Path:
    """``CONFIGD_CACHE_DIR``, else ``$XDG_CACHE_HOME/configd``, else ``~/.cache/configd``."""
    explicit = os.environ.get("CONFIGD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "configd"


class LastKnownGoodCache:
    """Reads and writes cached versions under ``root/prefix``. Failures to write are the caller's to log."""

    def __init__(self, root: str | os.PathLike[str], prefix: str) -> None:
        self.root = Path(root) / prefix

    def path(self, namespace: str, name: str) -> Path:
        return self.root / namespace / f"{name}.json"

    def write(self, document: Document) -> Path:
        target = self.path(document.namespace, document.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "format": CACHE_FORMAT,
            "namespace": document.namespace,
            "name": document.name,
            "version": document.version,
            "sha256": document.sha256,
            "data": document.data,
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{document.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(body, sort_keys=True, indent=1).encode())
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
                or sha256_hex(canonical_json(data)) != body["sha256"]
            ):
                return None
            return Document(namespace, name, int(body["version"]), str(body["sha256"]), data, "cache")
        except (OSError, ValueError, KeyError, TypeError):
            return None
