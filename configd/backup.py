"""``configd export-all DIR`` / ``configd import-all DIR``: everything configd keeps, as files, and back.

The export is every key under the prefix — schemas and their versions, heads, every version and blob chunk, the
audit log, retention policies — read in ONE recursive consistent read (Consul answers it from one point of the Raft
log, so pushes running meanwhile are either wholly in the export or wholly absent). Left out: the keys that belong
to live processes (``clients/``, bound to SDK sessions; ``locks/`` and ``maintenance/``, the elected replica's).

``DIR/manifest.json`` names the format, the source prefix, the time, the key count and the sha256 of
``DIR/kv.jsonl`` (one ``{"key", "value"}`` line per key; the key relative to the prefix, the value base64).

The import goes into a prefix that holds no configd data (it refuses otherwise, writing nothing), creates every
key with create-only transactions of at most 64 operations — versions, blobs, audit and schema versions first,
then schema heads, then heads, so a watcher never sees a head before its version — and, if any transaction
fails, deletes what it created: a failed import leaves the prefix as it found it. The imported history is
identical: same records, same versions, same sha256 (Consul's own indexes are new).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from configd_core.consul import ConsulGateway, TxnOp, op_create, op_delete
from configd_core.errors import ConfigdError
from configd_core.layout import CONSUL_TXN_MAX_BYTES, CONSUL_TXN_MAX_OPS, KeyLayout

FORMAT = "configd-export/1"
MANIFEST = "manifest.json"
DATA = "kv.jsonl"
# Keys of live processes, never exported nor required to be absent on import.
LIVE_ROOTS = ("clients/", "locks/", "maintenance/")
# Base64 makes a value 4/3 larger inside a transaction; leave room for the JSON around it.
_TXN_BUDGET = CONSUL_TXN_MAX_BYTES - 16 * 1024


@dataclass(frozen=True)
class BackupSummary:
    keys: int
    bytes: int
    sha256: str


def _relative(layout: KeyLayout, key: str) -> str:
    return key[len(layout.prefix) + 1 :]


def export_all(gateway: ConsulGateway, layout: KeyLayout, directory: Path) -> BackupSummary:
    """Write everything under ``layout.prefix`` (but the live keys) to ``directory``."""
    _, entries = gateway.list(f"{layout.prefix}/", consistent=True)
    kept = sorted((e for e in entries if not _relative(layout, e.key).startswith(LIVE_ROOTS)), key=lambda e: e.key)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    total = 0
    with open(directory / DATA, "wb") as out:
        for entry in kept:
            line = (
                json.dumps(
                    {"key": _relative(layout, entry.key), "value": base64.b64encode(entry.value).decode("ascii")}
                ).encode()
                + b"\n"
            )
            digest.update(line)
            out.write(line)
            total += len(entry.value)
    summary = BackupSummary(len(kept), total, digest.hexdigest())
    manifest = {
        "format": FORMAT,
        "prefix": layout.prefix,
        "exported_at": datetime.now(UTC).isoformat(),
        "keys": summary.keys,
        "bytes": summary.bytes,
        "sha256": summary.sha256,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def read_export(directory: Path) -> list[tuple[str, bytes]]:
    """The (relative key, value) pairs of an export, after checking its manifest and checksum."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
        raw = (directory / DATA).read_bytes()
    except (OSError, ValueError) as exc:
        raise ConfigdError(f"{directory} is not a configd export: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ConfigdError(f"{directory}: unknown export format {manifest.get('format')!r} (expected {FORMAT})")
    if hashlib.sha256(raw).hexdigest() != manifest.get("sha256"):
        raise ConfigdError(f"{directory}/{DATA} does not match the sha256 in its manifest: damaged or edited")
    pairs = []
    for line in raw.splitlines():
        item = json.loads(line)
        pairs.append((str(item["key"]), base64.b64decode(item["value"])))
    if len(pairs) != manifest.get("keys"):
        raise ConfigdError(f"{directory}: {len(pairs)} keys, the manifest says {manifest.get('keys')}")
    return pairs


def _phase(relative: str) -> int:
    if relative.startswith("heads/"):
        return 2
    if relative.startswith("schemas/heads/"):
        return 1
    return 0


def _packed(ops: list[tuple[str, TxnOp, int]]) -> list[list[tuple[str, TxnOp, int]]]:
    groups: list[list[tuple[str, TxnOp, int]]] = []
    current: list[tuple[str, TxnOp, int]] = []
    size = 0
    for item in ops:
        cost = item[2] * 4 // 3 + len(item[0]) + 100
        if current and (len(current) >= CONSUL_TXN_MAX_OPS or size + cost > _TXN_BUDGET):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        groups.append(current)
    return groups


def import_all(gateway: ConsulGateway, layout: KeyLayout, directory: Path) -> BackupSummary:
    """Create every key of the export under ``layout.prefix``; all or nothing (see the module docstring)."""
    pairs = read_export(directory)
    present = [k for k in gateway.keys(f"{layout.prefix}/") if not _relative(layout, k).startswith(LIVE_ROOTS)]
    if present:
        raise ConfigdError(
            f"prefix {layout.prefix!r} already holds {len(present)} configd keys (e.g. {present[0]}); "
            "import-all only fills an empty prefix: nothing was written"
        )
    ordered = sorted(pairs, key=lambda p: (_phase(p[0]), p[0]))
    ops = [(f"{layout.prefix}/{k}", op_create(f"{layout.prefix}/{k}", v), len(v)) for k, v in ordered]
    created: list[str] = []
    try:
        for group in _packed(ops):
            gateway.txn([op for _, op, _ in group])
            created += [key for key, _, _ in group]
    except ConfigdError as exc:
        for start in range(0, len(created), CONSUL_TXN_MAX_OPS):
            gateway.txn([op_delete(k) for k in created[start : start + CONSUL_TXN_MAX_OPS]])
        raise ConfigdError(f"import-all failed after {len(created)} keys and was undone: {exc}") from exc
    total = sum(len(v) for _, v in pairs)
    digest = hashlib.sha256((directory / DATA).read_bytes()).hexdigest()
    return BackupSummary(len(pairs), total, digest)


def run_backup_command(args: Any) -> int:
    """``configd export-all|import-all DIR`` (argparse namespace from configd.__main__)."""
    from .settings import ServerSettings

    overrides = {k: getattr(args, k) for k in ("consul_addr", "prefix") if getattr(args, k, None) is not None}
    settings = ServerSettings(**overrides)
    layout = KeyLayout(settings.prefix)
    with ConsulGateway(settings.consul_addr, token=settings.consul_token_value()) as gateway:
        if args.command == "export-all":
            summary = export_all(gateway, layout, Path(args.directory))
            verb = "exported"
        else:
            summary = import_all(gateway, layout, Path(args.directory))
            verb = "imported"
    print(f"{verb} {summary.keys} keys ({summary.bytes} bytes, sha256 {summary.sha256[:16]}…) prefix {layout.prefix!r}")
    return 0
