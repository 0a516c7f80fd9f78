"""Secret values, decrypted in the application's process with its key ring (``CONFIGD_KEYS_FILE``).

The SDK keeps documents encrypted everywhere (the watch loop, the last-known-good cache, events' raw documents)
and decrypts only when a document becomes the settings object (:func:`opened_data`, called from
``LiveSettings.offer``). A missing or wrong key is a :class:`~configd_core.errors.SecretUnreadable` naming the key
id and namespace; the running application keeps its last good settings and hears of it through ``on_error``.

The key file is read on first need and read again when it changed (a rotated key reaches a running process by
replacing the file; no restart).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from configd_core.errors import ConfigdError, SecretUnreadable
from configd_core.records import ENVELOPE_MARKER
from configd_core.secrets import KEYS_FILE_ENV, KeyRing, has_envelopes, open_document

from ._events import Document


class ApplicationKeys:
    """The key ring of the file ``CONFIGD_KEYS_FILE`` names (re-read when its size or mtime changes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[str, int, int] | None = None
        self._ring: KeyRing | None = None

    def ring(self) -> KeyRing:
        path = os.environ.get(KEYS_FILE_ENV)
        if not path:
            return KeyRing(origin=f"this process (no {KEYS_FILE_ENV} is set)")
        try:
            stat = Path(path).stat()
        except OSError as exc:
            raise SecretUnreadable(f"cannot read {KEYS_FILE_ENV}={path}: {exc.strerror}") from exc
        seen = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if seen != self._seen or self._ring is None:
                try:
                    self._ring = KeyRing.from_file(Path(path))
                except ConfigdError as exc:
                    raise SecretUnreadable(str(exc)) from exc
                self._seen = seen
            return self._ring


_KEYS = ApplicationKeys()


def opened_data(document: Document) -> dict[str, Any]:
    """The data of ``document`` with its secrets decrypted (the document itself when it has none)."""
    # An envelope is an object with the key "$configd-secret": its canonical JSON, when the source kept it,
    # holds that key's JSON text exactly, so a search of those bytes answers without serialising the data.
    maybe = ENVELOPE_MARKER in document.canonical if document.canonical is not None else has_envelopes(document.data)
    if not maybe:
        return document.data
    opened: dict[str, Any] = open_document(_KEYS.ring(), document.namespace, document.name, document.data)
    return opened
