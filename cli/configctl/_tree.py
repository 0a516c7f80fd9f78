"""The directory tree configctl exports and imports, and the import plan — decisions only, no HTTP.

Layout::

    DIR/<namespace>/<name>.json          the config's data
    DIR/<namespace>/<name>.schema.json   its JSON Schema (optional)

A plan compares each local document with the server's head by the SHA-256 of its canonical JSON (the server's
own content hash), so "unchanged" needs no document download; only changed documents are fetched, to diff them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from configd_core.diff import Change, diff_json, unified_diff
from configd_core.documents import canonical_json, document_sha256, pretty_json
from configd_core.errors import InvalidName
from configd_core.layout import validate_name

from ._errors import UsageError

Kind = Literal["schema", "config"]
Action = Literal["create", "update", "unchanged"]

CONFIG_SUFFIX = ".json"
SCHEMA_SUFFIX = ".schema.json"


@dataclass(frozen=True)
class TreeFile:
    """What one path in the tree stands for."""

    kind: Kind
    namespace: str
    name: str


def classify(root: Path, path: Path) -> TreeFile | None:
    """The tree meaning of ``path`` under ``root``, or None for files configctl ignores (hidden, temp, other).

    Raises UsageError for a ``.json`` file that sits where a config would but has an invalid name.
    """
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    if len(parts) != 2 or any(p.startswith(".") for p in parts) or not parts[1].endswith(CONFIG_SUFFIX):
        return None
    namespace, filename = parts
    if filename.endswith(SCHEMA_SUFFIX):
        kind: Kind = "schema"
        name = filename[: -len(SCHEMA_SUFFIX)]
    else:
        kind, name = "config", filename[: -len(CONFIG_SUFFIX)]
    try:
        return TreeFile(kind, validate_name(namespace, "namespace"), validate_name(name, "name"))
    except InvalidName as exc:
        raise UsageError(f"{path}: {exc}") from exc


def tree_path(root: Path, kind: Kind, namespace: str, name: str) -> Path:
    suffix = SCHEMA_SUFFIX if kind == "schema" else CONFIG_SUFFIX
    return root / namespace / f"{name}{suffix}"


def exportable(name: str) -> bool:
    """A config named ``x.schema`` would collide with the schema file of ``x``."""
    return not (name + CONFIG_SUFFIX).endswith(SCHEMA_SUFFIX)


def render_file(document: Any) -> str:
    """Exported files are canonical pretty JSON, so an export of an unchanged server is byte-identical."""
    return pretty_json(document).rstrip("\n") + "\n"


def scan_tree(root: Path) -> list[tuple[TreeFile, Path]]:
    """Every config and schema file of the tree, sorted (namespace, name, schema before config)."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    found = [
        (meaning, path)
        for path in root.glob("*/*.json")
        if path.is_file() and (meaning := classify(root, path)) is not None
    ]
    return sorted(found, key=lambda item: (item[0].namespace, item[0].name, item[0].kind != "schema"))


@dataclass(frozen=True)
class RemoteDocument:
    """The server's current head of a config or schema (``document`` only fetched when it differs)."""

    version: int
    sha256: str
    document: Any = None


@dataclass(frozen=True)
class PlanItem:
    """One document to create, update, or leave alone. Its changes and unified diff against the remote document
    are computed when first asked for (a plan of thousands of new documents shows none of them)."""

    kind: Kind
    namespace: str
    name: str
    action: Action
    local: Any
    remote_version: int | None = None
    remote_document: Any = None
    size: int = 0  # bytes of the local document's canonical JSON

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.ref} schema" if self.kind == "schema" else self.ref

    @cached_property
    def changes(self) -> list[Change]:
        if self.action == "unchanged":
            return []
        from configd_core.secrets import masked_pair  # hashlib, secrets, base64: only when a diff is shown

        old, new = masked_pair(self.remote_document if self.action == "update" else {}, self.local)
        return diff_json(old, new)

    @cached_property
    def unified(self) -> str:
        if self.action != "update":
            return ""
        from configd_core.secrets import masked_pair

        old, new = masked_pair(self.remote_document, self.local)
        return unified_diff(
            old,
            new,
            from_label=f"{self.label}@v{self.remote_version}",
            to_label=f"{self.label} (local)",
        )

    def as_import(self) -> dict[str, Any]:
        """The item of ``POST /api/v1/import``: applied only while the head is the one this plan saw (0 = none)."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "document": self.local,
            "expected_version": self.remote_version or 0,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "action": self.action,
            "remote_version": self.remote_version,
            "changes": [c.as_dict() for c in self.changes],
        }


def content_sha(document: Any) -> str:
    """What the server's head records: encrypted secrets count by their fingerprints (configd_core.records)."""
    return document_sha256(document)


def needs_document(local: Any, remote: RemoteDocument | None) -> bool:
    """Whether the plan must download the remote document: only to diff a real change."""
    return remote is not None and remote.sha256 != content_sha(local)


def plan_item(kind: Kind, namespace: str, name: str, local: Any, remote: RemoteDocument | None) -> PlanItem:
    """Decide create / update / unchanged for one local document against the server's head."""
    canonical = canonical_json(local)
    if remote is None:
        return PlanItem(kind, namespace, name, "create", local, size=len(canonical))
    action: Action = "unchanged" if remote.sha256 == document_sha256(local) else "update"
    return PlanItem(kind, namespace, name, action, local, remote.version, remote.document, len(canonical))


@dataclass(frozen=True)
class Plan:
    items: list[PlanItem]

    def count(self, action: Action) -> int:
        return sum(1 for item in self.items if item.action == action)

    def summary(self) -> dict[str, int]:
        return {action: self.count(action) for action in ("create", "update", "unchanged")}

    def batches(self) -> list[list[PlanItem]]:
        """The work to apply, one batch per config: its schema first, then its data (independent batches)."""
        grouped: dict[tuple[str, str], list[PlanItem]] = {}
        for item in self.items:
            if item.action != "unchanged":
                grouped.setdefault((item.namespace, item.name), []).append(item)
        return [sorted(batch, key=lambda i: i.kind != "schema") for _, batch in sorted(grouped.items())]


def import_requests(batches: list[list[PlanItem]], *, max_items: int, max_bytes: int) -> list[list[list[PlanItem]]]:
    """Consecutive configs' batches packed into import requests of at most ``max_items`` items and about
    ``max_bytes`` of documents. A config's schema and data always travel in the same request (the server commits
    them together); a config larger than ``max_bytes`` goes alone."""
    requests: list[list[list[PlanItem]]] = []
    current: list[list[PlanItem]] = []
    items = size = 0
    for batch in batches:
        batch_size = sum(i.size for i in batch)
        if current and (items + len(batch) > max_items or size + batch_size > max_bytes):
            requests.append(current)
            current, items, size = [], 0, 0
        current.append(batch)
        items += len(batch)
        size += batch_size
    if current:
        requests.append(current)
    return requests
