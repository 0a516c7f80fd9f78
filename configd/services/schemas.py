"""Versioned JSON Schemas (Draft 2020-12) in Consul, and the compiled validators every push uses."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator

from configd_core.consul import ConsulGateway, KVEntry, op_get
from configd_core.errors import NotFound, SchemaIncompatible, SchemaNotFound, VersionConflict
from configd_core.layout import CONSUL_TXN_MAX_OPS, KeyLayout, validate_name
from configd_core.records import SchemaHeadRecord, SchemaVersionRecord, sha256_hex

from ..planning.validation import compile_schema, config_errors
from ..planning.writes import (
    Heads,
    checked_author,
    checked_message,
    checked_schema,
    register_transaction,
    schema_write,
)

WriteStatus = Literal["created", "unchanged"]


@dataclass(frozen=True)
class SchemaResult:
    status: WriteStatus
    record: SchemaVersionRecord


@dataclass
class _ValidatorCache:
    """Compiled validators per schema version (keyed by content hash too): a push never recompiles."""

    maxsize: int = 1024
    compiled: int = 0
    _items: OrderedDict[tuple[str, str, int, str], Draft202012Validator] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cached(self, key: tuple[str, str, int, str]) -> Draft202012Validator | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def add(self, key: tuple[str, str, int, str], validator: Draft202012Validator, *, compiled: bool = True) -> None:
        with self._lock:
            self.compiled += compiled
            self._items[key] = validator
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get(self, key: tuple[str, str, int, str], build: Callable[[], dict[str, Any]]) -> Draft202012Validator:
        found = self.cached(key)
        if found is None:
            found = compile_schema(build())
            self.add(key, found)
        return found


class SchemaRegistry:
    """Versioned JSON Schemas (Draft 2020-12), meta-validated when registered."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout) -> None:
        self._gateway = gateway
        self._layout = layout
        self._validators = _ValidatorCache()

    @property
    def compiled_count(self) -> int:
        """How many schemas were compiled since start (a push of a known schema version adds none)."""
        return self._validators.compiled

    def head(self, namespace: str, name: str) -> tuple[SchemaHeadRecord, KVEntry] | None:
        entry = self._gateway.get(self._layout.schema_head(namespace, name))
        return (SchemaHeadRecord.from_bytes(entry.value), entry) if entry else None

    def get(self, namespace: str, name: str, version: int | None = None) -> SchemaVersionRecord:
        """The current schema, or one version of it."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        if version is None:
            found = self.head(namespace, name)
            if found is None:
                raise SchemaNotFound(f"no schema is registered for {namespace}/{name}")
            version = found[0].version
        entry = self._gateway.get(self._layout.schema_version(namespace, name, version))
        if entry is None:
            raise NotFound(f"schema {namespace}/{name} has no version {version}")
        return SchemaVersionRecord.from_bytes(entry.value)

    def versions(self, namespace: str, name: str) -> list[int]:
        keys = self._gateway.keys(self._layout.schema_versions_prefix(namespace, name))
        return sorted(int(k.rsplit("/", 1)[-1]) for k in keys)

    def validator(self, head: SchemaHeadRecord) -> Draft202012Validator:
        key = (head.namespace, head.name, head.version, head.sha256)
        return self._validators.get(key, lambda: self.get(head.namespace, head.name, head.version).json_schema)

    def heads(self, namespace: str) -> list[SchemaHeadRecord]:
        """The schema heads of a namespace, in name order (one recursive read: heads are small)."""
        validate_name(namespace, "namespace")
        _, entries = self._gateway.list(self._layout.schema_head(namespace, ""))
        return sorted((SchemaHeadRecord.from_bytes(e.value) for e in entries), key=lambda h: h.name)

    def validators(self, heads: list[SchemaHeadRecord]) -> dict[str, Draft202012Validator]:
        """Compiled validators of many schema heads, by sha256. The versions not cached yet are read in
        transactions of up to 64 gets, and identical schemas (same sha256) are compiled once."""
        found: dict[str, Draft202012Validator] = {}
        missing: list[SchemaHeadRecord] = []
        for head in heads:
            cached = self._validators.cached((head.namespace, head.name, head.version, head.sha256))
            if cached is not None:
                found.setdefault(head.sha256, cached)
            else:
                missing.append(head)
        for start in range(0, len(missing), CONSUL_TXN_MAX_OPS):
            batch = missing[start : start + CONSUL_TXN_MAX_OPS]
            try:
                entries = self._gateway.txn(
                    [op_get(self._layout.schema_version(h.namespace, h.name, h.version)) for h in batch]
                )
                records = [SchemaVersionRecord.from_bytes(e.value) for e in entries]
            except VersionConflict:  # a version that is not there fails the read as a whole: read them apart
                records = [self.get(h.namespace, h.name, h.version) for h in batch]
            for head, record in zip(batch, records, strict=True):
                known = found.get(head.sha256)
                validator = known if known is not None else compile_schema(record.json_schema)
                self._validators.add(
                    (head.namespace, head.name, head.version, head.sha256), validator, compiled=known is None
                )
                found[head.sha256] = validator
        return found

    def register(
        self,
        namespace: str,
        name: str,
        schema: Any,
        *,
        actor: str,
        message: str = "",
        force: bool = False,
        current_config: Callable[[], Any | None] | None = None,
    ) -> SchemaResult:
        """Register a new schema version.

        Raises ValidationFailed when ``schema`` is not a valid Draft 2020-12 schema, and SchemaIncompatible when
        the config's current head would fail it (unless ``force``). Identical content reports "unchanged".
        """
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        checked_message(message)
        checked_author(actor)
        sha = sha256_hex(checked_schema(namespace, name, schema))

        found = self.head(namespace, name)
        if found is not None and found[0].sha256 == sha:
            return SchemaResult("unchanged", self.get(namespace, name, found[0].version))

        config_entry = self._gateway.get(self._layout.head(namespace, name))
        if config_entry is not None and current_config is not None:
            data = current_config()
            if data is not None:
                errors = config_errors(compile_schema(schema), data)
                if errors and not force:
                    raise SchemaIncompatible(
                        f"{namespace}/{name}: the current config would fail this schema; "
                        "fix the config first or register with force",
                        errors,
                    )

        write = schema_write(
            namespace,
            name,
            schema,
            sha,
            current=found[0] if found else None,
            actor=actor,
            message=message,
            forced=force,
        )
        current = Heads(
            head=None,  # only its index guards the registration
            head_index=config_entry.modify_index if config_entry else 0,
            schema=found[0] if found else None,
            schema_index=found[1].modify_index if found else 0,
        )
        self._gateway.txn(register_transaction(self._layout, write, current))
        return SchemaResult("created", write.record)
