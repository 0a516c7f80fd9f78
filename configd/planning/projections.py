"""Projections, the pure part: which plain Consul keys a config's head is projected to, what they hold, and the
operations that write them. :mod:`configd.services.projections` does the reads and the commits.

A projection copies the head document (its secret fields dropped) to keys that clients other than configd's SDK
read unchanged (docs/interop.md):

=========  =====================================  =================================================================
kind       key(s)                                 value
=========  =====================================  =================================================================
document   ``target`` (any key outside configd's  the document as pretty JSON (:func:`configd_core.records.
           prefix)                                pretty_json`) or YAML (:func:`yaml_text`): Viper, consul-template
spring     ``config/<APP>[,<PROFILE>]/data``      the document as YAML: Spring Cloud Consul
tree       ``<prefix>/<PATH>`` per leaf           strings as they are, other leaves as JSON text: envconsul,
                                                  consul-template ``tree``; PATH is the leaf's JSON Pointer without
                                                  its leading slash (so ``/`` in a key is ``~1``)
=========  =====================================  =================================================================

Ownership: every key configd projects carries Consul ``Flags`` = :func:`owner_flags` of its config, and every
write is a CAS from the index it was read at. A key that exists with other flags was not written by configd for
this config, and is never overwritten or deleted (:class:`ProjectionKeyTaken`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from configd_core.consul import KVEntry, TxnOp, op_cas_flagged, op_delete_cas
from configd_core.diff import escape_token
from configd_core.errors import ErrorDetail, ValidationFailed, VersionConflict
from configd_core.layout import (
    CONSUL_MAX_VALUE_BYTES,
    CONSUL_TXN_MAX_BYTES,
    CONSUL_TXN_MAX_OPS,
    MAX_PROJECTED_KEYS,
    KeyLayout,
)
from configd_core.records import ProjectionSpec, ProjectionsRecord, pretty_json

# The top 12 bits of every projected key's Flags say "configd"; the low 40 bits name the config (sha256 of
# "<ns>/<name>"). 52 bits in all, so the number survives readers whose JSON numbers are doubles.
FLAGS_TAG = 0xC0F << 40
SPRING_ROOT = "config"  # Spring Cloud Consul's default spring.cloud.consul.config.prefix
SPRING_DATA_KEY = "data"  # … and its default data-key
MAX_TARGET_CHARS = 512
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SPRING_PART = re.compile(r"^[A-Za-z0-9._-]+$")


class ProjectionKeyTaken(VersionConflict):
    """A projection key exists and was not written by configd for this config: nothing is written (409)."""


def owner_flags(namespace: str, name: str) -> int:
    """The Consul Flags configd puts on every key it projects for ``namespace/name``."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return FLAGS_TAG | int.from_bytes(digest[:5], "big")


@dataclass(frozen=True)
class Target:
    """One projection resolved for one config: ``key`` is the document's key, or the tree's prefix (ending in
    ``/``); ``scope`` says whether it comes from the namespace's projections or the config's own."""

    kind: str
    key: str
    format: str
    scope: str

    def owns(self, key: str) -> bool:
        """Whether ``key`` is one this projection writes."""
        return key.startswith(self.key) if self.kind == "tree" else key == self.key


def _expand(text: str, namespace: str, name: str, what: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "namespace":
            return namespace
        if match.group(1) == "name":
            return name
        raise ValidationFailed(f"{what}: unknown placeholder {{{match.group(1)}}}; use {{namespace}} or {{name}}")

    expanded = _PLACEHOLDER.sub(replace, text)
    if "{" in expanded or "}" in expanded:
        raise ValidationFailed(f"{what}: unbalanced braces in {text!r}")
    return expanded


def _checked_key(key: str, layout: KeyLayout, what: str) -> str:
    if not key or key.startswith("/") or "//" in key or len(key) > MAX_TARGET_CHARS:
        raise ValidationFailed(
            f"{what}: {key!r} is not a usable Consul key (non-empty, no leading '/', no '//', "
            f"at most {MAX_TARGET_CHARS} characters)"
        )
    if key == layout.prefix or key.startswith(layout.prefix + "/"):
        raise ValidationFailed(f"{what}: {key!r} is inside configd's own prefix {layout.prefix}/")
    if any(ord(c) < 32 for c in key):
        raise ValidationFailed(f"{what}: {key!r} holds a control character")
    return key


def resolve(spec: ProjectionSpec, namespace: str, name: str, layout: KeyLayout, scope: str) -> Target:
    """The target of ``spec`` for the config ``namespace/name``; ValidationFailed when it cannot be projected."""
    what = f"{spec.kind} projection of {namespace}/{name}"
    target = _expand(spec.target, namespace, name, what)
    if spec.kind == "document":
        return Target("document", _checked_key(target, layout, what), spec.format, scope)
    if spec.kind == "spring":
        parts = target.split(",")
        if len(parts) > 2 or not all(_SPRING_PART.fullmatch(p) for p in parts):
            raise ValidationFailed(f"{what}: {target!r} must be APP or APP,PROFILE (letters, digits, '.', '_', '-')")
        key = f"{SPRING_ROOT}/{target}/{SPRING_DATA_KEY}"
        return Target("spring", _checked_key(key, layout, what), "yaml", scope)
    prefix = target if target.endswith("/") else target + "/"
    return Target("tree", _checked_key(prefix, layout, what), "text", scope)


def check_specs(specs: list[ProjectionSpec], *, every_config: bool) -> None:
    """A namespace-wide projection must name each config apart (``{name}``), or they would share keys."""
    for spec in specs:
        if every_config and "{name}" not in spec.target:
            raise ValidationFailed(
                f"a {spec.kind} projection for every config of a namespace must contain {{name}} in {spec.target!r}"
            )


def targets(record: ProjectionsRecord | None, namespace: str, name: str, layout: KeyLayout) -> list[Target]:
    """Every projection of ``namespace/name``: the namespace's, then its own; ValidationFailed when two of them
    would write the same key (or one inside another's tree)."""
    if record is None:
        return []
    found = [resolve(s, namespace, name, layout, "namespace") for s in record.every_config]
    found += [resolve(s, namespace, name, layout, "config") for s in record.configs.get(name, [])]
    for i, first in enumerate(found):
        for second in found[i + 1 :]:
            if first.owns(second.key) or second.owns(first.key):
                raise ValidationFailed(
                    f"{namespace}/{name}: the {first.kind} projection at {first.key} and the {second.kind} "
                    f"projection at {second.key} would write the same keys"
                )
    return found


# --- secret fields are never projected ------------------------------------------------------------------
_DROP = object()


def _is_secret(schema: Any) -> bool:
    return isinstance(schema, dict) and (schema.get("writeOnly") is True or schema.get("x-configd-secret") is True)


def _deref(schema: Any, root: Any, depth: int = 0) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        node = root
        for raw in schema["$ref"][1:].split("/")[1:]:
            token = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or token not in node:
                return schema
            node = node[token]
        depth += 1
        if depth > 32:
            return schema
        schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **node} if isinstance(node, dict) else node
    return schema


def _subschemas_for_key(schema: dict[str, Any], key: str) -> list[Any]:
    properties = schema.get("properties")
    if isinstance(properties, dict) and key in properties:
        return [properties[key]]
    found = [
        sub
        for pattern, sub in (schema.get("patternProperties") or {}).items()
        if isinstance(pattern, str) and re.search(pattern, key)
    ]
    additional = schema.get("additionalProperties")
    if not found and isinstance(additional, dict):
        found.append(additional)
    return found


def without_secrets(document: Any, schema: Any, root: Any = None) -> Any:
    """``document`` without the values its JSON Schema marks secret (``"writeOnly": true`` or
    ``"x-configd-secret": true``), followed through properties, patternProperties, additionalProperties, items,
    prefixItems, allOf and local ``$ref``. Pure; the document itself is not changed."""
    root = schema if root is None else root
    schema = _deref(schema, root)
    if _is_secret(schema):
        return _DROP
    if not isinstance(schema, dict):
        return document
    for part in schema.get("allOf") or []:
        if _is_secret(_deref(part, root)):
            return _DROP
    if isinstance(document, dict):
        result: dict[str, Any] = {}
        for key, value in document.items():
            kept = value
            subs = _subschemas_for_key(schema, key) + [
                sub
                for part in schema.get("allOf") or []
                for sub in _subschemas_for_key(_deref(part, root), key)
                if isinstance(_deref(part, root), dict)
            ]
            for sub in subs:
                kept = without_secrets(kept, sub, root)
                if kept is _DROP:
                    break
            if kept is not _DROP:
                result[key] = kept
        return result
    if isinstance(document, list):
        found = schema.get("prefixItems")
        prefix: list[Any] = found if isinstance(found, list) else []
        items = schema.get("items")
        kept_items = []
        for index, value in enumerate(document):
            sub = prefix[index] if index < len(prefix) else items
            kept = without_secrets(value, sub, root) if sub is not None else value
            if kept is not _DROP:
                kept_items.append(kept)
        return kept_items
    return document


def projected_document(document: dict[str, Any], schema: Any) -> dict[str, Any]:
    """The document a projection holds: the head's, secret fields dropped."""
    kept = without_secrets(document, schema)
    return kept if isinstance(kept, dict) else {}


# --- rendering -----------------------------------------------------------------------------------------
def yaml_text(document: Any) -> str:
    """The YAML form of a document: block style, keys sorted, UTF-8 text (PyYAML's safe dumper)."""
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True, default_flow_style=False)


def _leaves(value: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _leaves(value[key], f"{pointer}/{escape_token(key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{pointer}/{index}")
    elif pointer:
        yield pointer, value


def leaf_text(value: Any) -> str:
    """A tree leaf's value: a string as it is, anything else as its JSON text (``true``, ``5``, ``null``)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(target: Target, document: dict[str, Any]) -> dict[str, bytes]:
    """The keys ``target`` holds for ``document`` (already without secrets) and their values."""
    if target.kind == "tree":
        return {target.key + pointer[1:]: leaf_text(value).encode() for pointer, value in _leaves(document)}
    text = pretty_json(document) if target.format == "json" else yaml_text(document)
    return {target.key: text.encode()}


def render_all(found: list[Target], document: dict[str, Any] | None, where: str) -> dict[str, bytes]:
    """Every key the projections of one config hold (none for a deleted config); ValidationFailed when a value
    is larger than Consul stores or there are more keys than MAX_PROJECTED_KEYS."""
    if document is None:
        return {}
    values: dict[str, bytes] = {}
    for target in found:
        values.update(render(target, document))
    large = [ErrorDetail("/", f"{key}: {len(v)} bytes") for key, v in values.items() if len(v) > CONSUL_MAX_VALUE_BYTES]
    if large:
        raise ValidationFailed(
            f"{where}: a projected value would be larger than Consul stores ({CONSUL_MAX_VALUE_BYTES} bytes)", large
        )
    if len(values) > MAX_PROJECTED_KEYS:
        raise ValidationFailed(f"{where}: projects {len(values)} keys; at most {MAX_PROJECTED_KEYS} per config")
    return values


# --- the operations -----------------------------------------------------------------------------------
def projection_ops(
    owner: int, wanted: dict[str, bytes], existing: Iterable[KVEntry], scanned: list[Target], where: str
) -> list[TxnOp]:
    """CAS operations that make the projected keys hold ``wanted``: create what is missing, rewrite what changed
    (only keys carrying ``owner`` flags), and delete this config's keys under ``scanned`` targets that ``wanted``
    no longer has (a leaf that disappeared, a projection unset, a deleted config). Writes come first in key order,
    then deletes. Raises ProjectionKeyTaken, before any operation is built, for a key another writer holds."""
    present = {entry.key: entry for entry in existing}
    taken = sorted(k for k in wanted if k in present and present[k].flags != owner)
    if taken:
        shown = ", ".join(f"{k} (Flags {present[k].flags})" for k in taken[:5])
        raise ProjectionKeyTaken(
            f"{where}: projection key(s) {shown} exist and were not written by configd for this config; "
            "delete them or project elsewhere — nothing was written"
        )
    ops: list[TxnOp] = []
    for key in sorted(wanted):
        entry = present.get(key)
        if entry is None or entry.value != wanted[key]:
            ops.append(op_cas_flagged(key, wanted[key], entry.modify_index if entry else 0, owner))
    for key in sorted(present):
        entry = present[key]
        if key not in wanted and entry.flags == owner and any(t.owns(key) for t in scanned):
            ops.append(op_delete_cas(key, entry.modify_index))
    return ops


def txn_size(ops: list[TxnOp]) -> int:
    """Bytes of a transaction's JSON body, as Consul measures its request limit."""
    return len(json.dumps(ops))


def fits(ops: list[TxnOp]) -> bool:
    """Whether ``ops`` can be one Consul transaction (64 operations, 512 KiB)."""
    return len(ops) <= CONSUL_TXN_MAX_OPS and txn_size(ops) <= CONSUL_TXN_MAX_BYTES


def follow_up_batches(guards: list[TxnOp], ops: list[TxnOp]) -> list[list[TxnOp]]:
    """``ops`` in transactions that each start with ``guards`` (the head still where it was read), in order, each
    within Consul's limits."""
    batches: list[list[TxnOp]] = []
    current: list[TxnOp] = list(guards)
    size = txn_size(current)
    for op in ops:
        length = len(json.dumps(op)) + 2
        if len(current) > len(guards) and (
            len(current) + 1 > CONSUL_TXN_MAX_OPS or size + length > CONSUL_TXN_MAX_BYTES
        ):
            batches.append(current)
            current, size = list(guards), txn_size(guards)
        current.append(op)
        size += length
    if len(current) > len(guards):
        batches.append(current)
    return batches
