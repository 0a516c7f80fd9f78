"""JSON documents as configd stores and hashes them: the checks, canonical JSON, sha256, the pretty form.

Plain functions over the standard library (no pydantic), so the CLI and the SDK can use them without importing
the record models of :mod:`configd_core.records`, which re-exports every name here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidConfig
from .layout import MAX_JSON_DEPTH

__all__ = [
    "ENVELOPE_KEY",
    "ENVELOPE_MARKER",
    "canonical_json",
    "check_document",
    "document_sha256",
    "fingerprint_form",
    "json_depth",
    "pretty_json",
    "sha256_hex",
    "utcnow",
]


def utcnow() -> str:
    """RFC 3339 UTC timestamp with microseconds, as every record stores it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a JSON value; stops counting past ``limit``.

    Level by level: each pass keeps only the containers of the level and gathers their members, so a scalar
    costs one type check in a comprehension (a 4 MB document: ~13 ms, against ~130 ms for a stack of tuples).
    """
    depth = 0
    level: list[Any] = [value]
    nesting = (dict, list)  # a tuple: isinstance with the union dict | list is ~60 % slower here
    while True:
        containers = [node for node in level if isinstance(node, nesting)]
        if not containers:
            return depth
        depth += 1
        if depth > limit:
            return depth
        level = []
        for node in containers:
            level.extend(node.values() if isinstance(node, dict) else node)


def check_document(value: Any, what: str = "config") -> None:
    """Raise InvalidConfig unless ``value`` is a JSON object that configd can store and hash."""
    if not isinstance(value, dict):
        raise InvalidConfig(f"a {what} must be a JSON object, not {type(value).__name__}")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InvalidConfig(f"the {what} is nested deeper than {MAX_JSON_DEPTH} levels")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes a version's sha256 is computed over."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"not storable as JSON: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: The key of a secret value's envelope (configd_core.secrets has the format).
ENVELOPE_KEY = "$configd-secret"
ENVELOPE_MARKER = b'"$configd-secret"'


def fingerprint_form(document: Any) -> Any:
    """``document`` with every secret envelope reduced to its key id and fingerprint (``configd_core.secrets``)."""
    if isinstance(document, dict):
        body = document.get(ENVELOPE_KEY)
        if len(document) == 1 and body is not None:
            body = body if isinstance(body, dict) else {}
            return {ENVELOPE_KEY: {"kid": body.get("kid"), "fp": body.get("fp")}}
        return {k: fingerprint_form(v) for k, v in document.items()}
    if isinstance(document, list):
        return [fingerprint_form(v) for v in document]
    return document


def document_sha256(document: Any) -> str:
    """The sha256 a version records: of its canonical JSON, with secret envelopes in their fingerprint form (so a
    re-encrypted secret is the same content; a document without secrets hashes as its canonical JSON)."""
    canonical = canonical_json(document)
    if ENVELOPE_MARKER not in canonical:
        return sha256_hex(canonical)
    return sha256_hex(canonical_json(fingerprint_form(document)))


def pretty_json(value: Any) -> str:
    """The canonical pretty-printed form that unified diffs are computed over."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
