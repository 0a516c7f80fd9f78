"""Retention decisions, without I/O: which audit entries and which config versions a namespace's policy removes.

A policy (``<prefix>/retention/<ns>``; none means keep everything)::

    {"audit_max_age_days": 90, "audit_max_entries": 10000, "versions_keep_last": 50, "versions_max_age_days": 365}

- Audit entries go when older than ``audit_max_age_days`` OR beyond the newest ``audit_max_entries`` (either alone
  is enough; an entry's key starts with its UTC time, so both are decided from key names alone).
- A config version goes only when it is beyond the newest ``versions_keep_last`` AND older than
  ``versions_max_age_days`` (both must be set; either alone keeps every version). The head is never removed: it is
  always among the last ``versions_keep_last`` (≥ 1), and deletes are guarded by the head's index.
- Deletes go out in transactions of at most 64 operations (Consul's limit), so each is small and short.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from configd_core.layout import CONSUL_TXN_MAX_OPS

RETENTION_BATCH_OPS = CONSUL_TXN_MAX_OPS


class RetentionPolicy(BaseModel):
    """One namespace's retention policy; every field None keeps everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audit_max_age_days: float | None = Field(default=None, gt=0, description="audit entries older than this go")
    audit_max_entries: int | None = Field(default=None, ge=1, description="only the newest N audit entries stay")
    versions_keep_last: int | None = Field(default=None, ge=1, description="the newest K versions always stay")
    versions_max_age_days: float | None = Field(
        default=None, gt=0, description="beyond the last K, versions older than this go (needs versions_keep_last)"
    )

    @model_validator(mode="after")
    def _versions_need_both(self) -> RetentionPolicy:
        if (self.versions_keep_last is None) != (self.versions_max_age_days is None):
            raise ValueError(
                "versions are removed only beyond the last versions_keep_last AND older than versions_max_age_days: "
                "set both, or neither"
            )
        return self

    @property
    def trims_audit(self) -> bool:
        return self.audit_max_age_days is not None or self.audit_max_entries is not None

    @property
    def trims_versions(self) -> bool:
        return self.versions_keep_last is not None and self.versions_max_age_days is not None


def audit_time(entry_id: str) -> datetime | None:
    """The time in an audit entry id (``20261202T160000.123456Z-ab12cd34``), or None when it has none."""
    try:
        return datetime.strptime(entry_id.split("-", 1)[0], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def expired_audit(keys: Sequence[str], policy: RetentionPolicy, now: datetime) -> list[str]:
    """The audit keys (of one namespace) the policy removes, oldest first."""
    ordered = sorted(keys)  # ids start with their UTC time: key order is time order
    doomed: set[str] = set()
    if policy.audit_max_entries is not None and len(ordered) > policy.audit_max_entries:
        doomed.update(ordered[: len(ordered) - policy.audit_max_entries])
    if policy.audit_max_age_days is not None:
        cutoff = now - timedelta(days=policy.audit_max_age_days)
        for key in ordered:
            at = audit_time(key.rsplit("/", 1)[-1])
            if at is None or at >= cutoff:
                break
            doomed.add(key)
    return [k for k in ordered if k in doomed]


def version_candidates(versions: Iterable[int], head_version: int, policy: RetentionPolicy) -> list[int]:
    """Versions beyond the newest ``versions_keep_last`` (never the head); their age is checked next."""
    if not policy.trims_versions:
        return []
    assert policy.versions_keep_last is not None
    newest_kept = sorted({v for v in versions if v <= head_version}, reverse=True)[: policy.versions_keep_last]
    floor = min(newest_kept) if newest_kept else head_version
    return sorted(v for v in versions if v < floor and v != head_version)


def old_enough(created_at: str, policy: RetentionPolicy, now: datetime) -> bool:
    """Whether a version created at ``created_at`` (ISO 8601) is older than ``versions_max_age_days``."""
    assert policy.versions_max_age_days is not None
    try:
        created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return False  # an unreadable date never removes anything
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created < now - timedelta(days=policy.versions_max_age_days)


def batches(keys: Sequence[str], size: int = RETENTION_BATCH_OPS) -> list[list[str]]:
    """``keys`` in groups of at most ``size`` (one transaction each)."""
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]
