"""Retention decisions (configd.planning.retention): which audit entries and versions a policy removes. No Consul."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from configd.planning.retention import (
    RetentionPolicy,
    audit_time,
    batches,
    expired_audit,
    old_enough,
    version_candidates,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _key(at: datetime, suffix: str = "ab12cd34") -> str:
    return f"p/audit/ns/{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{suffix}"


def test_default_policy_keeps_everything() -> None:
    policy = RetentionPolicy()
    assert not policy.trims_audit and not policy.trims_versions
    keys = [_key(NOW - timedelta(days=d)) for d in range(1000)]
    assert expired_audit(keys, policy, NOW) == []
    assert version_candidates(range(1, 1000), 999, policy) == []


def test_versions_need_both_keep_last_and_max_age() -> None:
    with pytest.raises(ValidationError, match="set both"):
        RetentionPolicy(versions_keep_last=5)
    with pytest.raises(ValidationError, match="set both"):
        RetentionPolicy(versions_max_age_days=5)
    with pytest.raises(ValidationError):
        RetentionPolicy(versions_keep_last=0, versions_max_age_days=1)
    with pytest.raises(ValidationError):
        RetentionPolicy.model_validate({"audit_max_entries": 5, "keep": "all"})


def test_audit_by_count_and_by_age() -> None:
    keys = [_key(NOW - timedelta(days=d)) for d in range(10)]  # newest first, on purpose
    by_count = expired_audit(keys, RetentionPolicy(audit_max_entries=3), NOW)
    assert by_count == sorted(keys)[:7]
    by_age = expired_audit(keys, RetentionPolicy(audit_max_age_days=4.5), NOW)
    assert by_age == sorted(keys)[:5]  # 9..5 days old
    either = expired_audit(keys, RetentionPolicy(audit_max_age_days=8.5, audit_max_entries=6), NOW)
    assert either == sorted(keys)[:4]
    assert audit_time("20261202T120000.000000Z-ab12cd34") == NOW
    assert audit_time("not-a-time") is None


def test_version_candidates_never_include_the_head_or_the_last_k() -> None:
    policy = RetentionPolicy(versions_keep_last=3, versions_max_age_days=1)
    assert version_candidates(range(1, 11), 10, policy) == [1, 2, 3, 4, 5, 6, 7]
    assert version_candidates([1, 2, 3], 3, policy) == []
    assert version_candidates([4, 7, 9, 10], 10, policy) == [4]  # gaps from earlier passes
    keep_one = RetentionPolicy(versions_keep_last=1, versions_max_age_days=1)
    assert 10 not in version_candidates(range(1, 11), 10, keep_one)
    # A version newer than the head read (a push landed meanwhile) is never a candidate either.
    assert version_candidates(range(1, 12), 10, policy) == [1, 2, 3, 4, 5, 6, 7]


def test_age_of_a_version() -> None:
    policy = RetentionPolicy(versions_keep_last=1, versions_max_age_days=2)
    assert old_enough((NOW - timedelta(days=3)).isoformat(), policy, NOW)
    assert not old_enough((NOW - timedelta(days=1)).isoformat(), policy, NOW)
    assert old_enough("2026-11-01T00:00:00Z", policy, NOW)
    assert not old_enough("garbage", policy, NOW)


def test_batches_fit_a_transaction() -> None:
    keys = [str(i) for i in range(130)]
    assert [len(b) for b in batches(keys)] == [64, 64, 2]
    assert [k for b in batches(keys) for k in b] == keys
