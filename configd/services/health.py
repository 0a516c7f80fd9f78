"""Is Consul there for configd: does it answer, and has it a leader (what ``/healthz`` reports)."""

from __future__ import annotations

from dataclasses import dataclass

from configd_core.consul import ConsulGateway
from configd_core.errors import ConsulPermissionDenied, ConsulUnavailable


@dataclass(frozen=True)
class ConsulHealth:
    ok: bool
    leader: str | None
    detail: str


def consul_health(gateway: ConsulGateway) -> ConsulHealth:
    """Ask Consul for its leader; an outage, an ACL refusal and a leaderless cluster are each "not ok"."""
    try:
        leader = gateway.leader()
    except (ConsulUnavailable, ConsulPermissionDenied) as exc:
        return ConsulHealth(False, None, str(exc))
    if not leader:
        return ConsulHealth(False, None, "Consul answers but has no leader")
    return ConsulHealth(True, leader, f"Consul at {gateway.address} has a leader")
