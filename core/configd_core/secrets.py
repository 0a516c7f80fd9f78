"""Secret values in configd documents: the envelope, the key file, AES-256-GCM, and the fingerprint form.

Shared by the server (which encrypts) and the SDK (which decrypts), so both read one definition of each format.

A secret value is stored in place of the plain value as an **envelope**::

    {"$configd-secret": {"v": 1, "kid": "k1-3fa9c2d1", "dk": "<b64>", "n": "<b64>", "ct": "<b64>", "fp": "<b64>"}}

- ``kid``: the namespace key that wrapped the data key (looked up in the key file);
- ``dk``: the version's data key (32 random bytes, one per written version), wrapped with AES-256-GCM by the
  namespace key: 12-byte nonce + ciphertext + tag, bound to ``namespace/name/kid`` (associated data);
- ``n``, ``ct``: the nonce and AES-256-GCM ciphertext (with tag) of the value's canonical JSON under the data key,
  bound to ``namespace``, ``name``, the value's JSON Pointer and ``kid`` (associated data), so a ciphertext copied
  to another field, config or namespace does not decrypt;
- ``fp``: the keyed **fingerprint** of the plain value: HMAC-SHA256 under a key derived from the namespace key,
  over the same binding and the value. It decides "unchanged" and "secret changed" without the value, and it
  cannot be brute-forced without the key.

A version's ``sha256`` is computed over the **fingerprint form** of its document (:func:`document_sha256`): each
envelope reduced to ``{"kid", "fp"}``. Randomized ciphertexts therefore do not make a new version, and a document
without secrets hashes exactly as before. The ciphertext itself is protected by GCM's tag, not by the sha256.

The **key file** (``CONFIGD_KEYS_FILE``; the server holds every namespace it writes, an application only its own)::

    {"format": "configd-keys/1",
     "namespaces": {"payments": {"active": "k2-…", "keys": [{"kid": "k1-…", "key": "<b64 32 bytes>",
                                                             "created_at": "…"}, …]}}}

``cryptography`` is imported only when a value is encrypted or decrypted (``pip install 'configd[secrets]'``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets as _random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from .diff import escape_token
from .documents import ENVELOPE_KEY, canonical_json, utcnow
from .errors import ConfigdError, ErrorDetail, SecretUnreadable

#: What every reader sees in place of a secret value (API, UI, configctl get, diffs).
MASK = "••••••"
KEYS_FILE_ENV = "CONFIGD_KEYS_FILE"
KEYS_FORMAT = "configd-keys/1"
KEY_BYTES = 32
NONCE_BYTES = 12


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _cipher() -> tuple[Any, type[Exception]]:
    """AES-GCM and its authentication failure, from ``cryptography`` (imported on first use: an application
    without secret fields does not need it)."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigdError(
            "this config has secret values and reading or writing them needs the 'cryptography' package: "
            "pip install 'configd[secrets]'"
        ) from exc
    return AESGCM, InvalidTag


def _aesgcm(key: bytes) -> Any:
    return _cipher()[0](key)


# --- keys ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamespaceKey:
    """One key of a namespace: its id, its 32 bytes and when it was created."""

    kid: str
    key: bytes = field(repr=False)
    created_at: str

    def as_dict(self) -> dict[str, str]:
        return {"kid": self.kid, "key": _b64(self.key), "created_at": self.created_at}

    @classmethod
    def new(cls, index: int) -> NamespaceKey:
        return cls(f"k{index}-{_random.token_hex(4)}", _random.token_bytes(KEY_BYTES), utcnow())


@dataclass(frozen=True)
class NamespaceKeys:
    """The keys of one namespace: every key still needed to read old versions, and the one new writes use."""

    active: str
    keys: tuple[NamespaceKey, ...]

    def get(self, kid: str) -> NamespaceKey | None:
        return next((k for k in self.keys if k.kid == kid), None)


@dataclass(frozen=True)
class KeyRing:
    """Namespace keys read from a key file (``origin`` names the file in error messages)."""

    namespaces: dict[str, NamespaceKeys] = field(default_factory=dict)
    origin: str = "no key file"

    def key(self, namespace: str, kid: str) -> bytes:
        """The key ``kid`` of ``namespace``; SecretUnreadable naming both when it is not in the ring."""
        keys = self.namespaces.get(namespace)
        found = keys.get(kid) if keys else None
        if found is None:
            what = "has no keys for it" if keys is None else "does not hold it"
            raise SecretUnreadable(f"no key {kid!r} for namespace {namespace!r}: {self.origin} {what}")
        return found.key

    def active(self, namespace: str) -> NamespaceKey:
        """The key new writes to ``namespace`` use; SecretUnreadable when the namespace has none."""
        keys = self.namespaces.get(namespace)
        found = keys.get(keys.active) if keys else None
        if found is None:
            raise SecretUnreadable(
                f"namespace {namespace!r} has no active key in {self.origin}: create one with "
                f"`configd keys create {namespace}` before pushing a config with secret fields"
            )
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "format": KEYS_FORMAT,
            "namespaces": {
                ns: {"active": keys.active, "keys": [k.as_dict() for k in keys.keys]}
                for ns, keys in sorted(self.namespaces.items())
            },
        }

    def only(self, namespaces: list[str]) -> KeyRing:
        """The same ring restricted to ``namespaces`` (an application's key file)."""
        return KeyRing({ns: k for ns, k in self.namespaces.items() if ns in namespaces}, self.origin)

    @classmethod
    def from_json(cls, body: Any, origin: str) -> KeyRing:
        """Parse a key file's JSON; ConfigdError naming ``origin`` when it is not a valid key file."""
        try:
            if not isinstance(body, dict) or body.get("format") != KEYS_FORMAT:
                raise ValueError(f'"format" must be {KEYS_FORMAT!r}')
            spaces: dict[str, NamespaceKeys] = {}
            for ns, entry in dict(body.get("namespaces") or {}).items():
                keys = tuple(
                    NamespaceKey(str(k["kid"]), _unb64(k["key"]), str(k.get("created_at", ""))) for k in entry["keys"]
                )
                if any(len(k.key) != KEY_BYTES for k in keys):
                    raise ValueError(f"namespace {ns}: every key must be {KEY_BYTES} bytes (base64)")
                spaces[str(ns)] = NamespaceKeys(str(entry["active"]), keys)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigdError(f"{origin} is not a configd key file: {exc}") from exc
        return cls(spaces, origin)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        try:
            body = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigdError(f"cannot read the key file {path}: {exc}") from exc
        return cls.from_json(body, str(path))

    def write(self, path: Path) -> None:
        """Write the ring to ``path`` atomically, readable by its owner only."""
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(self.as_json(), indent=2) + "\n")
        os.replace(tmp, path)


# --- envelopes and the fingerprint form --------------------------------------------------------------------
def is_envelope(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and len(value) == 1 and ENVELOPE_KEY in value


def envelopes(document: Any, pointer: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every envelope in ``document`` with its JSON Pointer (document order)."""
    stack: list[tuple[Any, str]] = [(document, pointer)]
    while stack:
        node, here = stack.pop()
        if is_envelope(node):
            body = node[ENVELOPE_KEY]
            yield here, body if isinstance(body, dict) else {}
        elif isinstance(node, dict):
            stack.extend((v, f"{here}/{escape_token(str(k))}") for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{here}/{i}") for i, v in reversed(list(enumerate(node))))


def has_envelopes(document: Any) -> bool:
    """Whether ``document`` may hold an envelope (a fast text check: json's C encoder, no sorting)."""
    return ENVELOPE_KEY in json.dumps(document, ensure_ascii=False, check_circular=False)


def replace_envelopes(document: Any, replace: Any) -> Any:
    """A copy of ``document`` with each envelope replaced by ``replace(pointer, body)``."""

    def walk(node: Any, here: str) -> Any:
        if is_envelope(node):
            body = node[ENVELOPE_KEY]
            return replace(here, body if isinstance(body, dict) else {})
        if isinstance(node, dict):
            return {k: walk(v, f"{here}/{escape_token(str(k))}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{here}/{i}") for i, v in enumerate(node)]
        return node

    return walk(document, "")


def masked(document: Any) -> Any:
    """``document`` as every reader sees it: each secret value replaced by :data:`MASK`."""
    return replace_envelopes(document, lambda _, __: MASK)


#: A secret whose fingerprint differs from the other side's, in a diff.
CHANGED_MASK = f"{MASK} (secret changed)"


def _fingerprints(document: Any) -> dict[str, tuple[Any, Any]]:
    return {p: (body.get("kid"), body.get("fp")) for p, body in envelopes(document)}


def masked_pair(old: Any, new: Any) -> tuple[Any, Any]:
    """Two stored documents as a diff shows them: every secret a MASK, and a secret of ``new`` whose fingerprint
    differs from ``old``'s at the same pointer :data:`CHANGED_MASK` (decided from fingerprints, never values)."""
    before = _fingerprints(old) if old is not None else {}
    after = replace_envelopes(
        new, lambda p, body: MASK if before.get(p) == (body.get("kid"), body.get("fp")) else CHANGED_MASK
    )
    return (masked(old) if old is not None else None), after


# --- the cipher ----------------------------------------------------------------------------------------------
def _binding(namespace: str, name: str, pointer: str, kid: str) -> bytes:
    return "\0".join(("configd-secret/v1", namespace, name, pointer, kid)).encode()


def _dk_binding(namespace: str, name: str, kid: str) -> bytes:
    return "\0".join(("configd-dk/v1", namespace, name, kid)).encode()


def fingerprint(key: bytes, namespace: str, name: str, pointer: str, value: Any) -> str:
    """HMAC-SHA256 of a plain value under a key derived from the namespace key, bound to where it lives."""
    fp_key = hmac.new(key, b"configd fingerprint key v1", hashlib.sha256).digest()
    message = _binding(namespace, name, pointer, "") + b"\0" + canonical_json(value)
    return _b64(hmac.new(fp_key, message, hashlib.sha256).digest())


@dataclass
class DataKey:
    """The data key of one version being written: 32 random bytes, wrapped once by the namespace key."""

    namespace: str
    name: str
    wrapping: NamespaceKey
    key: bytes = field(default_factory=lambda: _random.token_bytes(KEY_BYTES), repr=False)
    wrapped: str = ""

    def __post_init__(self) -> None:
        nonce = _random.token_bytes(NONCE_BYTES)
        sealed = _aesgcm(self.wrapping.key).encrypt(
            nonce, self.key, _dk_binding(self.namespace, self.name, self.wrapping.kid)
        )
        self.wrapped = _b64(nonce + sealed)

    def envelope(self, pointer: str, value: Any) -> dict[str, Any]:
        """The envelope that stores ``value`` at ``pointer`` of this config."""
        kid = self.wrapping.kid
        nonce = _random.token_bytes(NONCE_BYTES)
        ct = _aesgcm(self.key).encrypt(nonce, canonical_json(value), _binding(self.namespace, self.name, pointer, kid))
        fp = fingerprint(self.wrapping.key, self.namespace, self.name, pointer, value)
        return {ENVELOPE_KEY: {"v": 1, "kid": kid, "dk": self.wrapped, "n": _b64(nonce), "ct": _b64(ct), "fp": fp}}


def decrypt_envelope(ring: KeyRing, namespace: str, name: str, pointer: str, body: dict[str, Any]) -> Any:
    """The plain value of one envelope; SecretUnreadable (naming key id, namespace and pointer) when it cannot be."""
    invalid_tag = _cipher()[1]
    kid = str(body.get("kid", ""))
    where = f"{namespace}/{name} {pointer}"
    key = ring.key(namespace, kid)
    try:
        wrapped = _unb64(body.get("dk"))
        data_key = _aesgcm(key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _dk_binding(namespace, name, kid))
        plain = _aesgcm(data_key).decrypt(
            _unb64(body.get("n")), _unb64(body.get("ct")), _binding(namespace, name, pointer, kid)
        )
        value = json.loads(plain)
    except invalid_tag as exc:
        raise SecretUnreadable(
            f"the secret at {where} does not decrypt with key {kid!r} of namespace {namespace!r}: a wrong key, "
            "a tampered ciphertext, or a ciphertext copied from another field or config"
        ) from exc
    except ValueError as exc:
        raise SecretUnreadable(f"the secret at {where} is not a readable envelope ({exc})") from exc
    if not hmac.compare_digest(fingerprint(key, namespace, name, pointer, value), str(body.get("fp", ""))):
        raise SecretUnreadable(f"the secret at {where} does not match its fingerprint (key {kid!r} of {namespace!r})")
    return value


def open_document(ring: KeyRing | None, namespace: str, name: str, document: Any) -> Any:
    """``document`` with every envelope decrypted; SecretUnreadable listing each one that cannot be (by pointer).

    A document without envelopes is returned as it is (no key needed)."""
    found = list(envelopes(document))
    if not found:
        return document
    ring = ring or KeyRing()
    problems: list[ErrorDetail] = []
    plain: dict[str, Any] = {}
    for pointer, body in found:
        try:
            plain[pointer] = decrypt_envelope(ring, namespace, name, pointer, body)
        except SecretUnreadable as exc:
            problems.append(ErrorDetail(pointer or "/", str(exc)))
    if problems:
        raise SecretUnreadable(f"{namespace}/{name}: {problems[0].message}", problems)
    return replace_envelopes(document, lambda pointer, _: plain[pointer])
