"""Many real SDK clients in one process, for the relay benchmark: ``python -m bench._relay_sdk --addr URL ...``.

``--count`` ``ConfigClient`` objects (each its own blocking query, as each would be in its own process) watch one
config; every callback records ``(version, time.time())``. Prints ``READY {}`` once all hold their first version;
``REPORT`` on stdin prints ``REPORT {"changes": [[version, time], ...]}`` (since the last report); ``EXIT``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.relay import raise_open_files_limit
from configd_client import ConfigClient
from configd_core.consul import ConsulGateway

_woken: list[float] = []
_list = ConsulGateway.list


def _timed_list(self: ConsulGateway, prefix: str, **kwargs: Any) -> Any:
    """ConsulGateway.list, noting when a blocking one returns (wake-up vs callback: where the time goes)."""
    answer = _list(self, prefix, **kwargs)
    if kwargs.get("index") is not None:
        _woken.append(time.time())
    return answer


ConsulGateway.list = _timed_list  # type: ignore[method-assign]


class Service(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="BENCH_RELAY_")
    seq: int = 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    raise_open_files_limit()
    lock = threading.Lock()
    changes: list[tuple[int, float]] = []
    clients: list[ConfigClient] = []
    workdir = tempfile.mkdtemp(prefix="configd-bench-sdk-")

    def record(event: Any) -> None:
        now = time.time()
        with lock:
            changes.append((event.version, now))

    for i in range(args.count):
        # No registration: its sessions and writes are forwarded to Consul unchanged and are not what is measured;
        # they would add a thread per client to processes that hold hundreds of clients.
        client = ConfigClient(args.addr, prefix=args.prefix, cache=False, cache_dir=f"{workdir}/{i}", register=False)
        live = client.settings(Service, args.config, timeout=60)
        live.on_change(record)
        clients.append(client)
    print("READY {}", flush=True)
    for line in sys.stdin:
        if line.strip() == "REPORT":
            with lock:
                taken, changes[:] = list(changes), []
                woken, _woken[:] = list(_woken), []
            print("REPORT " + json.dumps({"changes": taken, "woken": woken}), flush=True)
        elif line.strip() == "EXIT":
            break
    for client in clients:
        client.close()


if __name__ == "__main__":
    main()
