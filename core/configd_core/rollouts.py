"""Rollout membership: which instances run a rollout's candidate — one pure rule, used by the SDK (which decides
for itself, from the head record its blocking query delivers) and by the server (which counts and previews).

Percentages are sticky: an instance's *bucket* for a rollout is a number in [0, 100) derived from the sha256 of
its stable instance key, the config and the rollout id. The same instance gets the same bucket across restarts,
so it stays in or out; a larger percentage only adds instances (every bucket below 25 is below 50 too); and a new
rollout of the same config draws a new sample (its id differs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ValidationFailed
from .records import RolloutRecord

#: Bucket resolution: percentages are honoured to 1/100 of a percent.
BUCKETS = 10_000


@dataclass(frozen=True)
class InstanceIdentity:
    """What rollout membership is decided from: the stable key, the registration's instance id, the labels."""

    key: str
    instance_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


def bucket(instance_key: str, namespace: str, name: str, rollout_id: str) -> float:
    """The instance's sticky position in [0, 100) for one rollout of one config."""
    digest = hashlib.sha256(f"{instance_key}\0{namespace}/{name}\0{rollout_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % BUCKETS) * 100 / BUCKETS


def labels_match(wanted: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every wanted pair is among the instance's labels (nothing wanted: every instance matches)."""
    return all(labels.get(key) == value for key, value in wanted.items())


def is_member(rollout: RolloutRecord, identity: InstanceIdentity, percent: float | None = None) -> bool:
    """Whether ``identity`` runs the candidate at the rollout's current step (or at ``percent``).

    Listed instances (by key or id) always do; otherwise the labels must match and the sticky bucket must be
    below the step's percentage (100 takes every matching instance, 0 none).
    """
    cohort = rollout.plan.cohort
    if identity.key in cohort.instances or (identity.instance_id and identity.instance_id in cohort.instances):
        return True
    if not labels_match(cohort.labels, identity.labels):
        return False
    share = rollout.percent if percent is None else percent
    if share >= 100:
        return True
    return bucket(identity.key, rollout.namespace, rollout.name, rollout.id) < share


def parse_labels(text: str) -> dict[str, str]:
    """``"region=eu,tier=canary"`` → ``{"region": "eu", "tier": "canary"}`` (``CONFIGD_LABELS``, ``--labels``)."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValidationFailed(f"label {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels
