"""The server's namespace keys (``CONFIGD_KEYS_FILE``) and ``configd keys create/rotate/list/export``.

The server encrypts, so it holds the key of every namespace it writes secrets to; applications hold only their
namespaces' keys (``configd keys export``). The file is re-read when it changes, so a rotation needs no restart:
new writes use the new active key, old versions stay readable with the old keys the file keeps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configd_core.errors import ConfigdError, NotFound
from configd_core.layout import validate_name
from configd_core.secrets import (
    DataKey,
    KeyRing,
    NamespaceKey,
    NamespaceKeys,
    decrypt_envelope,
    envelopes,
    replace_envelopes,
)

if TYPE_CHECKING:
    from .configs import ConfigStore, PushResult


class ServerKeys:
    """The key ring of a key file, re-read whenever the file's size or mtime changes (None: no keys at all)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._ring = KeyRing(origin="the server's key ring (no CONFIGD_KEYS_FILE)")
        if path is not None:
            self.ring()  # a broken file stops the start

    def ring(self) -> KeyRing:
        if self.path is None:
            return self._ring
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise ConfigdError(f"cannot read the key file {self.path}: {exc}") from exc
        seen = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if seen != self._seen:
                self._ring = KeyRing.from_file(self.path)
                self._seen = seen
            return self._ring


def _read(path: Path) -> KeyRing:
    return KeyRing.from_file(path) if path.exists() else KeyRing(origin=str(path))


def create_key(path: Path, namespace: str) -> NamespaceKey:
    """Add ``namespace`` with a first, active key to the key file (created when missing); refuses an existing one."""
    validate_name(namespace, "namespace")
    ring = _read(path)
    if namespace in ring.namespaces:
        raise ConfigdError(f"namespace {namespace!r} already has keys in {path}; use `configd keys rotate`")
    key = NamespaceKey.new(1)
    KeyRing({**ring.namespaces, namespace: NamespaceKeys(key.kid, (key,))}, str(path)).write(path)
    return key


def rotate_key(path: Path, namespace: str, *, stage: bool = False) -> NamespaceKey:
    """A new active key for ``namespace``; the old keys stay in the file (old versions stay readable).

    ``stage`` adds the new key without activating it, so it can reach every application's key file first; the
    next ``rotate`` then activates the staged key instead of making another (rotation without a failed version).
    """
    ring = _read(path)
    keys = ring.namespaces.get(namespace)
    if keys is None:
        raise NotFound(f"namespace {namespace!r} has no keys in {path}; use `configd keys create`")
    position = next(i for i, k in enumerate(keys.keys) if k.kid == keys.active)
    staged = keys.keys[position + 1 :]
    if staged and not stage:
        key, updated = staged[-1], keys.keys
    else:
        key = NamespaceKey.new(len(keys.keys) + 1)
        updated = (*keys.keys, key)
    active = keys.active if stage else key.kid
    KeyRing({**ring.namespaces, namespace: NamespaceKeys(active, updated)}, str(path)).write(path)
    return key


@dataclass(frozen=True)
class KeyListing:
    namespace: str
    kid: str
    created_at: str
    active: bool
    staged: bool = False


def list_keys(path: Path) -> list[KeyListing]:
    """Every key of the file (ids and dates only: never the key bytes)."""
    ring = KeyRing.from_file(path)
    found: list[KeyListing] = []
    for ns, keys in sorted(ring.namespaces.items()):
        position = next((i for i, k in enumerate(keys.keys) if k.kid == keys.active), len(keys.keys))
        found += [
            KeyListing(ns, k.kid, k.created_at, k.kid == keys.active, staged=i > position)
            for i, k in enumerate(keys.keys)
        ]
    return found


def export_keys(path: Path, namespaces: list[str], out: Path) -> KeyRing:
    """An application's key file: only ``namespaces``' keys."""
    ring = KeyRing.from_file(path)
    missing = [ns for ns in namespaces if ns not in ring.namespaces]
    if missing:
        raise NotFound(f"{path} has no keys for {', '.join(missing)}")
    only = ring.only(namespaces)
    KeyRing(only.namespaces, str(out)).write(out)
    return only


def rewrap(store: ConfigStore, namespace: str, *, actor: str) -> tuple[list[PushResult], list[tuple[str, Exception]]]:
    """A new version of every head of ``namespace`` whose secrets are under an older key: the same plain values
    under the active key (versions are immutable, so re-wrapping is a new version; the SDK applies it as usual).
    A head that cannot be rewrapped (unreadable, moved meanwhile) is reported, and the others still are."""
    active = store.keys.ring().active(namespace).kid
    done: list[PushResult] = []
    failed: list[tuple[str, Exception]] = []
    for head in store.heads(namespace):
        stored = store.current_data(head)
        kids = {str(body.get("kid")) for _, body in envelopes(stored)}
        if not kids or kids == {active}:
            continue
        try:
            done.append(
                store.push(
                    namespace,
                    head.name,
                    stored,
                    actor=actor,
                    message=f"rewrap secrets to key {active}",
                    expected_version=head.version,
                )
            )
        except ConfigdError as exc:
            failed.append((head.name, exc))
    return done, failed


def reencrypt(source: KeyRing, target: KeyRing, namespace: str, name: str, document: Any) -> Any:
    """An exported document's secrets moved from ``source``'s keys to ``target``'s active key (another
    environment), without the plain values leaving this process; the fingerprints change with the key."""
    found = list(envelopes(document))
    if not found:
        return document
    data_key = DataKey(namespace, name, target.active(namespace))
    plain = {p: decrypt_envelope(source, namespace, name, p, body) for p, body in found}
    return replace_envelopes(document, lambda pointer, _: data_key.envelope(pointer, plain[pointer]))
