"""The SDK instances registered in a namespace (``clients/<ns>/<instance>``, written by the SDK under a session)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from configd_core.consul import ConsulGateway
from configd_core.errors import ConfigdError
from configd_core.layout import KeyLayout, validate_name
from configd_core.records import ClientRecord, HeadRecord

log = logging.getLogger("configd")


@dataclass(frozen=True)
class AppliedVersion:
    """One config an instance follows: the version it applied, the head's, and whether they are the same."""

    name: str
    applied_version: int
    head_version: int | None

    @property
    def current(self) -> bool:
        return self.applied_version == self.head_version


@dataclass(frozen=True)
class Instance:
    """A registered SDK instance compared with the heads of its namespace (see :func:`compare`)."""

    record: ClientRecord
    configs: tuple[AppliedVersion, ...]

    @property
    def current(self) -> bool:
        return all(c.current for c in self.configs)


def compare(record: ClientRecord, heads: dict[str, HeadRecord]) -> Instance:
    """What an instance applied against the heads, by config name (pure; a deleted head has no version)."""
    configs = []
    for name, applied in sorted(record.applied.items()):
        head = heads.get(name)
        head_version = head.version if head is not None and not head.deleted else None
        configs.append(AppliedVersion(name, applied, head_version))
    return Instance(record, tuple(configs))


class ClientDirectory:
    """Reads the registrations of SDK instances."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout) -> None:
        self._gateway = gateway
        self._layout = layout

    def records(self, namespace: str) -> list[ClientRecord]:
        """The readable registrations of ``namespace``, by key; an unreadable one is logged and skipped, so it
        cannot hide the others."""
        validate_name(namespace, "namespace")
        _, entries = self._gateway.list(self._layout.clients_prefix(namespace))
        found = []
        for entry in sorted(entries, key=lambda e: e.key):
            try:
                found.append(ClientRecord.from_bytes(entry.value))
            except ConfigdError:
                log.warning("skipping unreadable client record %s", entry.key)
        return found

    def instances(self, namespace: str, heads: list[HeadRecord]) -> list[Instance]:
        """Every registered instance of ``namespace`` compared with ``heads`` (the namespace's, deleted included)."""
        by_name = {h.name: h for h in heads}
        return [compare(record, by_name) for record in self.records(namespace)]
