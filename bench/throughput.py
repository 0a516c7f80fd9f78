"""2. Push throughput: validated, versioned pushes/s through the HTTP API at concurrency 1 and 16, beside raw
Consul transactions/s with the same operations.

configd: each worker pushes its own config (20 fields, schema with types and bounds), every push a new version.
Raw "txn": each worker sends the transaction a push commits — 4 KV ops (check-index on the schema head,
create the version key, set the head, set an audit entry) with the byte sizes of configd's real records —
through configd's own Consul client (``ConsulGateway``: py-consul on urllib3), so the ratio is what configd adds.
Also measured, interleaved: raw "read+txn" (plus the two reads a push makes when it does not know the heads),
raw through py-consul as shipped (requests), and the floor: a FastAPI app on configd's server stack whose sync
endpoint only commits the same transaction (``bench._floor_app``) — the fastest any push on this stack can be —
and the required floor: that endpoint plus only what every validated, authenticated push must do before its write
(``/push``: body, token, parse, configd's validator, canonical hash), the most a push that validates can reach.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import consul
import httpx
import requests.adapters

from configd_core.consul import ConsulGateway, op_cas, op_check_index, op_set
from configd_core.layout import KeyLayout

from ._env import ADMIN_TOKEN, SCHEMA, BenchEnv, Server, config_data, ok, setup_configs
from ._floor_app import FLOOR_TOKEN
from ._stats import ratio

_FLOOR_AUTH = {"Authorization": f"Bearer {FLOOR_TOKEN}"}


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


def run(env: BenchEnv, concurrencies: list[int], seconds: float, workers: int = 1) -> dict[str, Any]:
    server = env.start_server(workers=workers)
    namespace = "throughput"
    names = [f"svc-{i:02d}" for i in range(max(concurrencies))]
    setup_configs(server, namespace, names)
    with server.client() as http:
        ok(http.put(f"/api/v1/configs/{namespace}/{names[0]}", json={"data": config_data(1)}))
    sizes = _record_sizes(env, server, namespace, names[0])
    floor_url, floor = env.start_floor(workers, sizes, schema=SCHEMA)
    seq = {"n": 10}
    lock = threading.Lock()
    rows = []
    gateway = ConsulGateway(env.consul_addr, pool_size=max(concurrencies) + 2)
    host, port = env.consul_addr.rsplit("//", 1)[-1].rsplit(":", 1)
    stock = consul.Consul(host=host, port=int(port))  # py-consul as shipped (requests), for comparison only
    stock.http.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=max(concurrencies) + 2))
    gateway.put("bench-raw/throughput/schema", b"{}")
    schema_index = gateway.get("bench-raw/throughput/schema")
    assert schema_index is not None
    for concurrency in concurrencies:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        pool = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, limits=limits, timeout=60
        )
        floor_pool = httpx.Client(base_url=floor_url, limits=limits, timeout=60)

        def configd_push(worker: int, pool: httpx.Client = pool) -> Callable[[int], None]:
            name = names[worker]

            def step(i: int) -> None:
                with lock:
                    seq["n"] += 1
                    n = seq["n"]
                body = ok(pool.put(f"/api/v1/configs/{namespace}/{name}", json={"data": config_data(n)}), 201)
                assert body["status"] == "created"

            return step

        def floor_push(worker: int, pool: httpx.Client = floor_pool) -> Callable[[int], None]:
            def step(i: int) -> None:
                assert ok(pool.put(f"/txn/{worker}"))["status"] == "created"

            return step

        def required_push(worker: int, pool: httpx.Client = floor_pool) -> Callable[[int], None]:
            """The required floor: the floor's write plus only what a validated, authenticated push must do."""

            def step(i: int) -> None:
                with lock:
                    seq["n"] += 1
                    n = seq["n"]
                answer = pool.put(f"/push/{worker}", json={"data": config_data(n)}, headers=_FLOOR_AUTH)
                assert ok(answer, 201)["status"] == "created"

            return step

        def raw_txn(worker: int, reads: bool = False, client: Any = None) -> Callable[[int], None]:
            base = f"bench-raw/throughput/{worker}/{uuid.uuid4().hex[:8]}"

            def step(i: int) -> None:
                if reads:
                    gateway.get(f"{base}/head")
                    gateway.get("bench-raw/throughput/schema")
                ops = [
                    op_check_index("bench-raw/throughput/schema", schema_index.modify_index),
                    op_cas(f"{base}/versions/{i}", b"v" * sizes["version"], 0),
                    op_set(f"{base}/head", b"h" * sizes["head"]),
                    op_set(f"{base}/audit/{i}", b"a" * sizes["audit"]),
                ]
                if client is None:
                    gateway.txn(ops)
                else:
                    client.txn.put(ops)

            return step

        # Interleave short slices so every variant sees the same machine load.
        variants: dict[str, Callable[[int], Callable[[int], None]]] = {
            "configd": configd_push,
            "raw": raw_txn,
            "raw_read": lambda w: raw_txn(w, reads=True),
            "raw_stock": lambda w: raw_txn(w, client=stock),
            "floor": floor_push,
            "required": required_push,
        }
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(2):
            for kind, make in variants.items():
                rates[kind].append(_rate(concurrency, seconds / 2, make))
        pool.close()
        floor_pool.close()
        mean = {k: round(sum(v) / len(v), 1) for k, v in rates.items()}
        row = {
            "concurrency": concurrency,
            "configd_pushes_per_s": mean["configd"],
            "raw_txn_per_s": mean["raw"],
            "raw_read_txn_per_s": mean["raw_read"],
            "raw_stock_txn_per_s": mean["raw_stock"],
            "floor_per_s": mean["floor"],
            "required_floor_per_s": mean["required"],
            "required_over_floor": ratio(mean["required"], mean["floor"]),
            "configd_over_floor": ratio(mean["configd"], mean["floor"]),
            "configd_over_required": ratio(mean["configd"], mean["required"]),
            "ratio": ratio(mean["configd"], mean["raw"]),
            "ratio_vs_read_txn": ratio(mean["configd"], mean["raw_read"]),
            "ratio_vs_stock": ratio(mean["configd"], mean["raw_stock"]),
            "floor_ratio": ratio(mean["floor"], mean["raw"]),
            "target_ratio": 0.5,
        }
        row["target_met"] = row["ratio"] >= 0.5
        print(f"  concurrency {concurrency}: {row}", flush=True)
        rows.append(row)
    gateway.close()
    floor.terminate()
    floor.wait(timeout=15)
    server.stop()
    return {"record_bytes": sizes, "ops_per_txn": 4, "seconds_each": seconds, "server_workers": workers, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--workers", type=int, default=1, help="configd server processes")
    args = parser.parse_args()
    with BenchEnv() as env:
        rows = run(env, [int(c) for c in args.concurrency.split(",")], args.seconds, args.workers)
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
