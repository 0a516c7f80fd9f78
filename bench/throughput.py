"""2. Push throughput: validated, versioned pushes/s through the HTTP API at concurrency 1 and 16, beside raw
Consul transactions/s with the same operations.

configd: each worker pushes its own config (20 fields, schema with types and bounds), every push a new version.
Raw "txn": each worker sends the transaction a push commits — 4 KV ops (check-index on the schema head,
create the version key, set the head, set an audit entry) with the byte sizes of configd's real records.
Raw "read+txn": the same plus the two reads a push must make first (head and schema head).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from configd_client._consul import ConsulGateway, op_cas, op_check_index, op_set
from configd_client._layout import KeyLayout

from ._env import ADMIN_TOKEN, BenchEnv, Server, config_data, ok, setup_configs
from ._stats import ratio


def _rate(workers: int, seconds: float, make: Callable[[int], Callable[[int], None]]) -> float:
    """Operations/s of ``workers`` threads, each running its ``make(worker)`` function for ``seconds``."""
    counts = [0] * workers
    start = threading.Barrier(workers + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(worker: int) -> None:
        step = make(worker)
        start.wait()
        i = 0
        try:
            while not stop.is_set():
                i += 1
                step(i)
                counts[worker] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return round(sum(counts) / elapsed, 1)


def _record_sizes(env: BenchEnv, server: Server, namespace: str, name: str) -> dict[str, int]:
    layout = KeyLayout(server.prefix)
    with ConsulGateway(env.consul_addr) as gw:
        head = gw.get(layout.head(namespace, name))
        version = gw.get(layout.version(namespace, name, 2))
        _, audit = gw.list(layout.audit_prefix(namespace))
    assert head is not None and version is not None and audit
    return {"head": len(head.value), "version": len(version.value), "audit": max(len(a.value) for a in audit)}


def run(env: BenchEnv, concurrencies: list[int], seconds: float) -> dict[str, Any]:
    server = env.start_server()
    namespace = "throughput"
    names = [f"svc-{i:02d}" for i in range(max(concurrencies))]
    setup_configs(server, namespace, names)
    with server.client() as http:
        ok(http.put(f"/api/v1/configs/{namespace}/{names[0]}", json={"data": config_data(1)}))
    sizes = _record_sizes(env, server, namespace, names[0])
    seq = {"n": 10}
    lock = threading.Lock()
    rows = []
    gateway = ConsulGateway(env.consul_addr, pool_size=max(concurrencies) + 2)
    gateway.put("bench-raw/throughput/schema", b"{}")
    schema_index = gateway.get("bench-raw/throughput/schema")
    assert schema_index is not None
    for workers in concurrencies:
        pool = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
            timeout=60,
        )

        def configd_push(worker: int, pool: httpx.Client = pool) -> Callable[[int], None]:
            name = names[worker]

            def step(i: int) -> None:
                with lock:
                    seq["n"] += 1
                    n = seq["n"]
                body = ok(pool.put(f"/api/v1/configs/{namespace}/{name}", json={"data": config_data(n)}), 201)
                assert body["status"] == "created"

            return step

        def raw_txn(worker: int, reads: bool = False) -> Callable[[int], None]:
            base = f"bench-raw/throughput/{worker}/{uuid.uuid4().hex[:8]}"

            def step(i: int) -> None:
                if reads:
                    gateway.get(f"{base}/head")
                    gateway.get("bench-raw/throughput/schema")
                gateway.txn(
                    [
                        op_check_index("bench-raw/throughput/schema", schema_index.modify_index),
                        op_cas(f"{base}/versions/{i}", b"v" * sizes["version"], 0),
                        op_set(f"{base}/head", b"h" * sizes["head"]),
                        op_set(f"{base}/audit/{i}", b"a" * sizes["audit"]),
                    ]
                )

            return step

        # Interleave short slices so both see the same machine load.
        configd_rates, raw_rates, rawr_rates = [], [], []
        for _ in range(2):
            configd_rates.append(_rate(workers, seconds / 2, configd_push))
            raw_rates.append(_rate(workers, seconds / 2, raw_txn))
            rawr_rates.append(_rate(workers, seconds / 2, lambda w: raw_txn(w, reads=True)))
        pool.close()
        configd_rate = round(sum(configd_rates) / 2, 1)
        raw_rate = round(sum(raw_rates) / 2, 1)
        rawr_rate = round(sum(rawr_rates) / 2, 1)
        row = {
            "concurrency": workers,
            "configd_pushes_per_s": configd_rate,
            "raw_txn_per_s": raw_rate,
            "raw_read_txn_per_s": rawr_rate,
            "ratio": ratio(configd_rate, raw_rate),
            "ratio_vs_read_txn": ratio(configd_rate, rawr_rate),
            "target_ratio": 0.5,
        }
        row["target_met"] = row["ratio"] >= 0.5
        print(f"  concurrency {workers}: {row}", flush=True)
        rows.append(row)
    gateway.close()
    server.stop()
    return {"record_bytes": sizes, "ops_per_txn": 4, "seconds_each": seconds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    with BenchEnv() as env:
        print(json.dumps(run(env, [int(c) for c in args.concurrency.split(",")], args.seconds), indent=2))


if __name__ == "__main__":
    main()
