"""The audit log in Consul: appending a rejected attempt, listing entries (accepted writes append theirs inside
their own transaction, through :func:`configd.planning.audit.audit_op`)."""

from __future__ import annotations

import contextlib

from configd_core.consul import ConsulGateway, op_get
from configd_core.errors import ConfigdError
from configd_core.layout import CONSUL_TXN_MAX_OPS, KeyLayout, validate_name
from configd_core.records import AuditRecord

from ..planning.audit import audit_op


class AuditLog:
    """Reads and appends audit records under ``<prefix>/audit/<ns>/``."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout) -> None:
        self._gateway = gateway
        self._layout = layout

    def append(self, entry: AuditRecord) -> None:
        """Write one entry on its own."""
        self._gateway.txn([audit_op(self._layout, entry)])

    def record_rejection(self, entry: AuditRecord) -> None:
        """Append the audit entry of a rejected write attempt (the only write a rejection makes)."""
        # Consul being down is why many writes fail; then the caller's error is the one that matters.
        with contextlib.suppress(ConfigdError):
            self.append(entry)

    def namespaces(self) -> list[str]:
        """Namespaces that have audit entries (their key's second-to-last segment)."""
        keys = self._gateway.keys(self._layout.audit_root)
        return sorted({key.rsplit("/", 2)[-2] for key in keys if key.count("/") >= 2})

    def list(self, namespace: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The newest ``limit`` entries, newest first, of one namespace or of all."""
        if namespace is not None:
            validate_name(namespace, "namespace")
            prefix = self._layout.audit_prefix(namespace)
        else:
            prefix = self._layout.audit_root
        keys = self._gateway.keys(prefix)
        # Entry ids start with their timestamp, so sorting the last segment sorts by time across namespaces.
        keys.sort(key=lambda k: k.rsplit("/", 1)[-1], reverse=True)
        wanted = keys[: max(0, limit)]
        records: list[AuditRecord] = []
        for start in range(0, len(wanted), CONSUL_TXN_MAX_OPS):
            batch = wanted[start : start + CONSUL_TXN_MAX_OPS]
            for entry in self._gateway.txn([op_get(k) for k in batch]):
                records.append(AuditRecord.from_bytes(entry.value))
        return records
