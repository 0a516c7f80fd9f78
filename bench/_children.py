"""Starting watcher children (``bench._child``) and collecting what they report."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._env import ROOT, BenchEnv


@dataclass
class Event:
    child: int
    name: str
    version: str
    at: float


@dataclass
class Children:
    """A group of child processes; their stdout lines are parsed on one reader thread each."""

    env: BenchEnv
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    replies: dict[int, queue.Queue[tuple[str, dict[str, Any]]]] = field(default_factory=dict)

    def spawn(self, *args: str) -> int:
        index = len(self.processes)
        process = subprocess.Popen(
            [sys.executable, "-m", "bench._child", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.processes.append(process)
        self.env.children.append(process)  # type: ignore[arg-type]
        self.replies[index] = queue.Queue()
        threading.Thread(target=self._read, args=(index, process), daemon=True).start()
        return index

    def _read(self, index: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "EVT":
                name, version, at = rest.split()
                self.events.put(Event(index, name, version, float(at)))
            elif kind in ("BASE", "READY", "STATS"):
                self.replies[index].put((kind, json.loads(rest)))

    def reply(self, index: int, kind: str, timeout: float = 120) -> dict[str, Any]:
        got, body = self.replies[index].get(timeout=timeout)
        if got != kind:
            raise RuntimeError(f"child {index}: expected {kind}, got {got}")
        return body

    def wait_ready(self, timeout: float = 180) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(BASE, READY) stats of every child, once all are ready."""
        return [(self.reply(i, "BASE", timeout), self.reply(i, "READY", timeout)) for i in range(len(self.processes))]

    def stats(self, index: int) -> dict[str, Any]:
        process = self.processes[index]
        assert process.stdin is not None
        process.stdin.write("STATS\n")
        process.stdin.flush()
        return self.reply(index, "STATS")

    def collect(self, name: str, version: str, count: int, timeout: float = 30) -> list[Event]:
        """Wait for ``count`` events of (name, version); events of other pushes are dropped."""
        found: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {len(found)}/{count} children reported {name} v{version}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event.name == name and event.version == version:
                found.append(event)
        return found

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write("EXIT\n")
                    process.stdin.flush()
                    process.stdin.close()
                except OSError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
