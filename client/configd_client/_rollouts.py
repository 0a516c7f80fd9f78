"""This process's part in progressive rollouts: who it is, which document a head tells it to run, what it reports.

Membership is decided here, from the head record the namespace's one blocking query already delivered
(``HeadRecord.rollout``): no extra connection, no polling, no question to the server. The rule itself is
:func:`configd_core.rollouts.is_member` (sticky percentages over the stable instance key, labels, listed
instances). :class:`RolloutParticipant` applies it for one client; :class:`RolloutReports` is the bookkeeping of
what the registration publishes per config (``ClientRecord.rollouts``), without I/O.

Identity: the instance key is stable across restarts (``instance_key=``, else ``CONFIGD_INSTANCE_KEY``, else
``<host>/<application>``), so a percentage keeps the same instances in; the instance id is the registration's
(a forked child gets a new one and the client rebinds its identity before its watches restart).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from configd_core.errors import ValidationFailed
from configd_core.records import FailureKind, HeadRecord, RolloutFailure, RolloutRecord, RolloutReport, utcnow
from configd_core.rollouts import InstanceIdentity, is_member, parse_labels

#: Failures kept per report (the last ones): the record stays small, the driver has seen the earlier ones.
MAX_REPORTED_FAILURES = 5
#: Characters of a failure's reason that are reported.
MAX_FAILURE_REASON = 200

LABELS_ENV = "CONFIGD_LABELS"
INSTANCE_KEY_ENV = "CONFIGD_INSTANCE_KEY"


def default_labels() -> dict[str, str]:
    """``CONFIGD_LABELS`` (``region=eu,tier=canary``), else no labels."""
    return parse_labels(os.environ.get(LABELS_ENV, ""))


def default_instance_key(application: str) -> str:
    """``CONFIGD_INSTANCE_KEY``, else ``<host>/<application>``: the same across restarts of the same service."""
    return os.environ.get(INSTANCE_KEY_ENV) or f"{socket.gethostname()}/{application}"


def checked_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` as a plain dict of strings (ValidationFailed for anything else)."""
    if not all(isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in labels.items()):
        raise ValidationFailed(f"labels must map non-empty strings to strings, not {dict(labels)!r}")
    return dict(labels)


def rollout_key(head: HeadRecord) -> tuple[str, str, int] | None:
    """What of a head's rollout changes membership or the candidate: id, state and step (None: no active rollout)."""
    rollout = head.rollout
    if rollout is None or not rollout.active:
        return None
    return (rollout.id, rollout.state, rollout.step)


def failure(instance: str, kind: FailureKind, reason: str) -> RolloutFailure:
    """A failure record, its reason cut to :data:`MAX_FAILURE_REASON` characters."""
    if len(reason) > MAX_FAILURE_REASON:
        reason = reason[: MAX_FAILURE_REASON - 1] + "…"
    return RolloutFailure(instance=instance, kind=kind, reason=reason, at=utcnow())


@dataclass
class _Report:
    id: str
    member: bool
    failures: deque[RolloutFailure] = field(default_factory=lambda: deque(maxlen=MAX_REPORTED_FAILURES))


class RolloutReports:
    """What this instance says about each followed config's active rollout (pure bookkeeping; the caller locks).

    Every method returns True when what would be published changed (the registration then marks the namespace
    dirty). A new rollout of a config starts a new report; a report goes when its rollout ends; a failure counts
    only for the rollout it happened in.
    """

    def __init__(self) -> None:
        self._reports: dict[tuple[str, str], _Report] = {}

    def decided(self, namespace: str, name: str, rollout_id: str, member: bool) -> bool:
        report = self._reports.get((namespace, name))
        if report is not None and report.id == rollout_id:
            if report.member == member:
                return False
            report.member = member
            return True
        self._reports[(namespace, name)] = _Report(rollout_id, member)
        return True

    def ended(self, namespace: str, name: str) -> bool:
        return self._reports.pop((namespace, name), None) is not None

    def failed(self, namespace: str, name: str, rollout_id: str, record: RolloutFailure) -> bool:
        report = self._reports.get((namespace, name))
        if report is None or report.id != rollout_id:
            return False
        report.failures.append(record)
        return True

    def for_namespace(self, namespace: str, applied: Mapping[str, int]) -> dict[str, RolloutReport]:
        """The reports of one namespace, each with the version the instance runs (``applied``)."""
        return {
            name: RolloutReport(
                id=report.id, member=report.member, version=applied.get(name, 0), failures=list(report.failures)
            )
            for (ns, name), report in sorted(self._reports.items())
            if ns == namespace
        }

    def clear(self) -> None:
        self._reports = {}


class ReportSink(Protocol):
    """Where membership decisions and failures go (the registration; nothing when registration is off)."""

    def rollout_decided(self, namespace: str, name: str, rollout_id: str, member: bool) -> None: ...

    def rollout_ended(self, namespace: str, name: str) -> None: ...

    def rollout_failed(self, namespace: str, name: str, rollout_id: str, kind: FailureKind, reason: str) -> None: ...


class RolloutParticipant:
    """One client in rollouts: its identity, and the decision of which document a head tells it to run.

    ``identity`` is rebound (never mutated) when the registration's instance id changes after a fork.
    """

    def __init__(self, identity: InstanceIdentity, sink: ReportSink | None = None) -> None:
        self.identity = identity
        self.sink = sink

    def choose(self, head: HeadRecord) -> RolloutRecord | None:
        """The active rollout whose candidate this instance runs, or None: run the head's own document.

        Every decision is reported, a non-member's too (it applies nothing new, so nothing else would tell).
        """
        rollout = head.rollout
        if rollout is None or not rollout.active or head.deleted:
            if self.sink is not None:
                self.sink.rollout_ended(head.namespace, head.name)
            return None
        member = is_member(rollout, self.identity)
        if self.sink is not None:
            self.sink.rollout_decided(head.namespace, head.name, rollout.id, member)
        return rollout if member else None

    def failed(self, namespace: str, name: str, rollout_id: str, kind: FailureKind, reason: str) -> None:
        """A failure on a rollout's candidate (ignored unless that rollout is still the config's active one)."""
        if self.sink is not None:
            self.sink.rollout_failed(namespace, name, rollout_id, kind, reason)
