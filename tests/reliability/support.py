"""Helpers of the reliability tests: the integrity audit of a whole key prefix, CPU sampling, polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import HeadRecord, VersionRecord, canonical_json, decode_data, sha256_hex


@dataclass
class Integrity:
    """What :func:`audit_prefix` found: every config's versions, decoded, and every problem."""

    versions: dict[tuple[str, str], dict[int, object]] = field(default_factory=dict)
    heads: dict[tuple[str, str], HeadRecord] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def version_count(self) -> int:
        return sum(len(v) for v in self.versions.values())


def audit_prefix(gateway: ConsulGateway, layout: KeyLayout) -> Integrity:
    """Read every head and version record under ``layout.prefix`` (consistently) and check that nothing is torn.

    Every version record decodes, its data matches its sha256, versions run 1..N with ``parent = v - 1``, and every
    head points to an existing version with the same sha256. Problems are collected, not raised.
    """
    found = Integrity()
    _, entries = gateway.list(f"{layout.prefix}/", consistent=True)
    by_key = {e.key: e.value for e in entries}

    def chunks(record: VersionRecord) -> list[bytes]:
        blob = layout.blob_prefix(record.namespace, record.name, record.sha256)
        return [by_key[k] for k in sorted(k for k in by_key if k.startswith(blob))]

    for key, raw in sorted(by_key.items()):
        if key.startswith(f"{layout.prefix}/versions/"):
            try:
                record = VersionRecord.from_bytes(raw)
                data = decode_data(record, chunks)
            except Exception as exc:  # any failure is a finding
                found.problems.append(f"{key}: does not decode: {exc}")
                continue
            if sha256_hex(canonical_json(data)) != record.sha256:
                found.problems.append(f"{key}: data does not match sha256")
            if not key.endswith(f"/{record.version:012d}"):
                found.problems.append(f"{key}: record says version {record.version}")
            found.versions.setdefault((record.namespace, record.name), {})[record.version] = data
            expected_parent = record.version - 1 if record.version > 1 else None
            if record.parent != expected_parent:
                found.problems.append(f"{key}: parent {record.parent}, expected {expected_parent}")
        elif key.startswith(f"{layout.prefix}/heads/"):
            try:
                head = HeadRecord.from_bytes(raw)
            except Exception as exc:
                found.problems.append(f"{key}: head does not decode: {exc}")
                continue
            found.heads[(head.namespace, head.name)] = head
    for ref, versions in found.versions.items():
        numbers = sorted(versions)
        if numbers != list(range(1, len(numbers) + 1)):
            found.problems.append(f"{ref}: versions are not 1..N without gaps: {numbers[:5]}…{numbers[-5:]}")
    for ref, head in found.heads.items():
        target = found.versions.get(ref, {}).get(head.version)
        if target is None:
            found.problems.append(f"{ref}: head points to missing version {head.version}")
        elif sha256_hex(canonical_json(target)) != head.sha256:
            found.problems.append(f"{ref}: head sha256 differs from version {head.version}")
        if max(found.versions.get(ref, {0: None})) != head.version:
            found.problems.append(f"{ref}: head is v{head.version} but a later version exists")
    return found


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of a process and its threads so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


class SdkThreadsCpu:
    """CPU seconds of this process's SDK threads (named ``configd-…``), remembered per native thread id.

    pytest, the fixtures and the test's own polling share the process, so measuring all of it measures them too.
    Linux accounts CPU per thread (psutil reads ``/proc/self/task``); a thread that ended between two samples
    keeps its last reading.
    """

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}

    def sample(self) -> float:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for task in psutil.Process().threads():
            if names.get(task.id, "").startswith("configd-"):
                self._seen[task.id] = task.user_time + task.system_time
        return sum(self._seen.values())


def cpu_share(processes: dict[str, psutil.Process | SdkThreadsCpu], seconds: float) -> dict[str, float]:
    """Each process's (or the SDK threads') CPU use over the next ``seconds``, as a fraction of one core."""

    def used(what: psutil.Process | SdkThreadsCpu) -> float:
        return what.sample() if isinstance(what, SdkThreadsCpu) else cpu_seconds(what)

    before = {name: used(p) for name, p in processes.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: (used(p) - before[name]) / elapsed for name, p in processes.items()}


def wait_until(predicate: Callable[[], bool], timeout: float, tick: float = 0.02) -> float | None:
    """Seconds until ``predicate()`` held, or None when it did not within ``timeout``."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(tick)
