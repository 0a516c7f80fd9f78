"""Audit records, built without I/O: one per accepted write (inside its transaction) and one per rejected attempt."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from configd_core.consul import TxnOp, op_create
from configd_core.layout import MAX_MESSAGE_CHARS, KeyLayout
from configd_core.records import AuditRecord

# A rejection's detail is the error text it got; a body of validation errors can be long, the record need not be.
MAX_DETAIL_CHARS = 2000


def new_entry(
    *,
    actor: str,
    action: str,
    namespace: str,
    name: str | None,
    result: str,
    status: int,
    version: int | None = None,
    from_version: int | None = None,
    message: str = "",
    detail: str = "",
) -> AuditRecord:
    """A new audit record; its id sorts by time, so key order is time order.

    An accepted write's message was checked against MAX_MESSAGE_CHARS before (:func:`.writes.checked_message`);
    a rejected attempt's may be anything, so it is clipped here, with the detail.
    """
    now = datetime.now(UTC)
    # The suffix only separates entries of the same microsecond: it needs no secrecy, so it comes from ``random``
    # (reseeded in every forked worker) rather than os.urandom, a syscall that gives up the GIL mid-request.
    return AuditRecord(
        id=f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{random.getrandbits(32):08x}",
        at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=actor,
        action=action,
        namespace=namespace,
        name=name,
        result=result,
        status=status,
        version=version,
        from_version=from_version,
        message=message[:MAX_MESSAGE_CHARS],
        detail=detail[:MAX_DETAIL_CHARS],
    )


def audit_op(layout: KeyLayout, entry: AuditRecord) -> TxnOp:
    """The transaction operation that writes ``entry`` (create-only: an audit record is never rewritten)."""
    return op_create(layout.audit_entry(entry.namespace, entry.id), entry.to_bytes())
