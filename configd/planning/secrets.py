"""Secret fields on the write path, decided without I/O: which values the schema marks secret, the sealed document
that is stored, and what readers see instead (masks, "secret changed" in diffs, redacted validation errors).

A field is secret when its schema (after local ``$ref``, ``allOf``/``anyOf``/``oneOf``) says ``"writeOnly": true``
(what pydantic's ``SecretStr`` emits) or ``"x-configd-secret": true``. Every write path runs the same two steps:

1. :func:`opened` — the incoming document made plain: envelopes (an import, a rollback) are decrypted, which checks
   that each one belongs exactly there (namespace, config, JSON Pointer); a :data:`~configd_core.secrets.MASK`
   at a secret field keeps the head's value (so ``get``, edit, ``push`` round-trips work);
2. validation of the plain document, then :func:`seal` — each secret value replaced by its envelope under a new data
   key wrapped by the namespace's active key; the version's sha256 is over fingerprints, so the same secret pushed
   again is "unchanged".

The envelope format and the cipher are :mod:`configd_core.secrets` (shared with the SDK, which decrypts).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from jsonschema import Draft202012Validator

from configd_core.diff import escape_token
from configd_core.errors import ConfigTooLarge, ErrorDetail, SecretUnreadable
from configd_core.layout import MAX_CONFIG_BYTES
from configd_core.records import ENVELOPE_KEY, ENVELOPE_MARKER, canonical_json, document_sha256, sha256_hex
from configd_core.secrets import (
    MASK,
    DataKey,
    KeyRing,
    decrypt_envelope,
    is_envelope,
    open_document,
)

_MAX_REF_DEPTH = 32

Schema = dict[str, Any]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _local(root: Schema, ref: str) -> Any:
    node: Any = root
    for token in ref[1:].split("/")[1:] if ref.startswith("#/") else []:
        node = node.get(_unescape(token)) if isinstance(node, dict) else None
    return node if ref.startswith("#") else None


def _branches(schemas: list[Any], root: Schema) -> list[Schema]:
    """The subschemas that apply at one place: each schema, its local $ref targets and its allOf/anyOf/oneOf."""
    found: list[Schema] = []
    seen: set[int] = set()
    stack = [(s, 0) for s in schemas]
    while stack:
        schema, depth = stack.pop()
        if not isinstance(schema, dict) or id(schema) in seen or depth > _MAX_REF_DEPTH:
            continue
        seen.add(id(schema))
        found.append(schema)
        ref = schema.get("$ref")
        if isinstance(ref, str):
            stack.append((_local(root, ref), depth + 1))
        for keyword in ("allOf", "anyOf", "oneOf"):
            members = schema.get(keyword)
            if isinstance(members, list):
                stack.extend((m, depth + 1) for m in members)
    return found


def _is_secret(branches: list[Schema]) -> bool:
    return any(b.get("writeOnly") is True or b.get("x-configd-secret") is True for b in branches)


def _children(branches: list[Schema], key: str | int) -> list[Any]:
    found: list[Any] = []
    for b in branches:
        if isinstance(key, int):
            prefix = b.get("prefixItems")
            if isinstance(prefix, list) and key < len(prefix):
                found.append(prefix[key])
            elif isinstance(b.get("items"), dict):
                found.append(b["items"])
            continue
        properties = b.get("properties")
        if isinstance(properties, dict) and key in properties:
            found.append(properties[key])
            continue
        matched = False
        patterns = b.get("patternProperties")
        if isinstance(patterns, dict):
            for pattern, sub in patterns.items():
                try:
                    if re.search(pattern, key):
                        found.append(sub)
                        matched = True
                except re.error:
                    continue
        if not matched and isinstance(b.get("additionalProperties"), dict):
            found.append(b["additionalProperties"])
    return found


def _walk(node: Any, schemas: list[Any], root: Schema, pointer: str, on_secret: Callable[[str, Any], Any]) -> Any:
    branches = _branches(schemas, root)
    if branches and _is_secret(branches) and node is not None:
        return on_secret(pointer, node)
    if isinstance(node, dict) and not is_envelope(node):
        return {
            k: _walk(v, _children(branches, k), root, f"{pointer}/{escape_token(str(k))}", on_secret)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_walk(v, _children(branches, i), root, f"{pointer}/{i}", on_secret) for i, v in enumerate(node)]
    return node


def secret_pointers(schema: Schema, document: Any) -> list[str]:
    """The JSON Pointers of the values in ``document`` that ``schema`` marks secret (nulls are not secret)."""
    found: list[str] = []

    def note(pointer: str, value: Any) -> Any:
        found.append(pointer)
        return value

    _walk(document, [schema], schema, "", note)
    return found


# Schemas are compiled once per version and their validators cached, so the same dict comes back on every push:
# its verdict is remembered by identity (holding the dict, so an id is never reused while remembered).
_VERDICTS: dict[int, tuple[Any, bool]] = {}
_VERDICTS_MAX = 1024


def schema_has_secrets(schema: Any) -> bool:
    """Whether any subschema of ``schema`` is marked secret (cheap pre-check: the keywords appear at all)."""
    known = _VERDICTS.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    text = canonical_json(schema)
    verdict = b'"writeOnly":true' in text or b'"x-configd-secret":true' in text
    if len(_VERDICTS) >= _VERDICTS_MAX:
        _VERDICTS.clear()
    _VERDICTS[id(schema)] = (schema, verdict)
    return verdict


@dataclass(frozen=True)
class Sealed:
    """A document as it is stored: secret values in envelopes; its canonical bytes and its sha256."""

    data: Any
    canonical: bytes
    sha: str
    pointers: tuple[str, ...] = ()


def seal(
    ring: KeyRing, namespace: str, name: str, plain: Any, schema: Schema, canonical: bytes | None = None
) -> Sealed:
    """``plain`` (validated) with each secret value encrypted under a new data key; SecretUnreadable when the
    namespace has no active key. Without secret values, the document itself (no key needed; ``canonical``: its
    canonical bytes when the caller has them)."""
    pointers: list[str] = []
    data_key: list[DataKey] = []

    def encrypt(pointer: str, value: Any) -> Any:
        if not data_key:
            data_key.append(DataKey(namespace, name, ring.active(namespace)))
        pointers.append(pointer)
        return data_key[0].envelope(pointer, value)

    data = _walk(plain, [schema], schema, "", encrypt) if schema_has_secrets(schema) else plain
    if canonical is None or data is not plain:
        canonical = canonical_json(data)
    if len(canonical) > MAX_CONFIG_BYTES:
        raise ConfigTooLarge(len(canonical), MAX_CONFIG_BYTES)
    sha = sha256_hex(canonical) if ENVELOPE_MARKER not in canonical else document_sha256(data)
    return Sealed(data, canonical, sha, tuple(pointers))


def _at(document: Any, pointer: str) -> Any:
    node = document
    for token in pointer.split("/")[1:]:
        if isinstance(node, dict):
            node = node.get(_unescape(token))
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def opened(
    ring: KeyRing,
    namespace: str,
    name: str,
    incoming: Any,
    schema: Schema | None,
    head: Callable[[], Any | None],
    canonical: bytes | None = None,
) -> Any:
    """The plain document a write validates: envelopes decrypted (each must belong to this namespace, config and
    pointer), and a MASK at a secret field replaced by the head's value there (``head()``: the stored head).

    SecretUnreadable when an envelope does not decrypt or a mask has no secret behind it: nothing is written.
    ``canonical`` (the incoming document's canonical bytes, when known) makes a document without secrets free."""
    secret_schema = schema is not None and schema_has_secrets(schema)
    if canonical is not None and ENVELOPE_MARKER not in canonical and not secret_schema:
        return incoming
    plain = open_document(ring, namespace, name, incoming)
    if schema is None or not secret_schema:
        return plain
    masks = [p for p in secret_pointers(schema, plain) if _at(plain, p) == MASK]
    if not masks:
        return plain
    stored = head()
    problems: list[ErrorDetail] = []
    kept: dict[str, Any] = {}
    for pointer in masks:
        body = _at(stored, pointer) if stored is not None else None
        if not is_envelope(body):
            problems.append(ErrorDetail(pointer, f"{MASK} keeps the current secret, but the head has none here"))
            continue
        kept[pointer] = decrypt_envelope(ring, namespace, name, pointer, body[ENVELOPE_KEY])
    if problems:
        raise SecretUnreadable(f"{namespace}/{name}: {problems[0].message}", problems)

    def keep(pointer: str, value: Any) -> Any:
        return kept.get(pointer, value)

    return _walk(plain, [schema], schema, "", keep)


def redacted(errors: list[ErrorDetail], secrets: list[tuple[str, Any]]) -> list[ErrorDetail]:
    """Validation errors that cannot show a secret: an error at or under a secret field says so without its
    message, and any other message has the plain values masked out."""
    if not secrets:
        return errors
    texts = sorted(
        {t for _, v in secrets for t in (repr(v), str(v), canonical_json(v).decode()) if len(t) >= 1},
        key=len,
        reverse=True,
    )
    out: list[ErrorDetail] = []
    for error in errors:
        if any(error.path == p or error.path.startswith(p + "/") for p, _ in secrets):
            out.append(ErrorDetail(error.path, "this secret value fails the schema (the message is withheld)"))
            continue
        message = error.message
        for text in texts:
            message = message.replace(text, MASK)
        out.append(ErrorDetail(error.path, message))
    return out


def candidate_form(incoming: Any, schema: Schema, stored: Any) -> Any:
    """A dry run's candidate in the form :func:`masked_pair` compares, without comparing any plain value: a
    :data:`MASK` (keep the head's secret) or an envelope counts as what it stands for, any other value at a secret
    field as "secret changed". A dry run is a reader's request, so it must not be an oracle for guessing a secret."""
    if not schema_has_secrets(schema):
        return incoming

    def reduce(pointer: str, value: Any) -> Any:
        if is_envelope(value):
            return value
        current = _at(stored, pointer) if stored is not None and value == MASK else None
        if is_envelope(current):
            return current
        return {ENVELOPE_KEY: {"kid": None, "fp": None}}

    return _walk(incoming, [schema], schema, "", reduce)


def schema_of(validator: Draft202012Validator) -> Schema:
    """The JSON Schema a compiled validator checks against."""
    return cast(Schema, validator.schema)


def plain_values(schema: Schema | None, plain: Any) -> list[tuple[str, Any]]:
    """(pointer, value) of every secret value of a plain document (for :func:`redacted`)."""
    if schema is None or not schema_has_secrets(schema):
        return []
    return [(p, _at(plain, p)) for p in secret_pointers(schema, plain)]
