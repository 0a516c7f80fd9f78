"""3. Bulk and history: ``configctl import`` of many configs, listing a namespace of that size, and reading the
paginated history of a config with many versions — each beside raw Consul doing the same work.

Import: a tree of ``<count>`` configs, each with its own schema (a config cannot exist without one), applied by
the real ``configctl`` process (``POST /api/v1/import`` requests of up to 500 items, 4 at a time). Raw: the very
transactions configd commits — the same records (built by configd's own pure builders before the clock starts),
6 operations per config (schema version, schema head, config version, config head, two audit entries) packed by
the same ``pack_transactions`` within the same requests — written by as many threads as configctl has requests
in flight.
Listing and history: walking every page (``limit`` per page) of ``GET /api/v1/configs/<ns>?limit=&after=`` and
``GET …/versions?limit=&before=`` vs raw Consul reading the same pages (a keys listing and one txn of ``limit``
gets per page, what a client of raw Consul would have to do). The whole namespace in one response (no ``limit``)
is measured too, beside one raw recursive GET of the head keys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import requests

from configctl._cmd_sync import IMPORT_PARALLEL, IMPORT_REQUEST_ITEMS
from configd.planning.bulk import pack_transactions
from configd.planning.writes import Heads, config_write, schema_and_config_transaction, schema_write
from configd_core.consul import ConsulGateway, TxnOp, op_get
from configd_core.layout import KeyLayout
from configd_core.records import canonical_json, sha256_hex

from ._env import ADMIN_TOKEN, SCHEMA, BenchEnv, config_data, ok, setup_configs
from ._stats import ratio, summary_ms

RAW_THREADS = IMPORT_PARALLEL


def _write_tree(root: Path, namespace: str, count: int) -> list[str]:
    (root / namespace).mkdir(parents=True, exist_ok=True)
    schema = json.dumps(SCHEMA, sort_keys=True, indent=2).encode()
    names = []
    for i in range(count):
        name = f"cfg-{i:05d}"
        data = json.dumps(config_data(i), sort_keys=True, indent=2).encode()
        (root / namespace / f"{name}.json").write_bytes(data)
        (root / namespace / f"{name}.schema.json").write_bytes(schema)
        names.append(name)
    return names


NEW = Heads(head=None, head_index=0, schema=None, schema_index=0)  # a config that does not exist yet


def _raw_transactions(layout: KeyLayout, namespace: str, names: list[str]) -> list[list[TxnOp]]:
    """The transactions configd commits for this import, built by its own record builders (not timed): per config
    its schema's and its data's version, head and audit entry, packed per request like ``ConfigStore.import_items``.
    """
    schema_sha = sha256_hex(canonical_json(SCHEMA))
    per_request = IMPORT_REQUEST_ITEMS // 2  # configs per request: each brings its schema and its data
    transactions: list[list[TxnOp]] = []
    for start in range(0, len(names), per_request):
        groups: list[list[TxnOp]] = []
        for name in names[start : start + per_request]:
            data = config_data(int(name.rsplit("-", 1)[1]))
            canonical = canonical_json(data)
            schema = schema_write(
                namespace, name, SCHEMA, schema_sha, current=None, actor="bench", message="raw", forced=False
            )
            config = config_write(
                namespace, name, data, canonical, sha256_hex(canonical), head=None, schema_version=1, actor="bench",
                message="raw",
            )  # fmt: skip
            groups.append(schema_and_config_transaction(layout, schema, config, NEW))
        for batch in pack_transactions([(len(g), len(json.dumps(g))) for g in groups]):
            transactions.append([op for i in batch for op in groups[i]])
    return transactions


def _timed(fn: Any, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def run(env: BenchEnv, count: int, versions: int, page: int, repeat: int) -> dict[str, Any]:
    server = env.start_server()
    layout = KeyLayout(server.prefix)
    namespace = "bulk"
    tree = env.workdir / "import-tree"
    names = _write_tree(tree, namespace, count)
    cli_env = {**os.environ, "CONFIGD_URL": server.base_url, "CONFIGD_TOKEN": ADMIN_TOKEN}
    print(f"  importing {count} configs with configctl ...", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "configctl", "import", str(tree), "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
    )
    import_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"configctl import failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-2000:]}")
    report = json.loads(done.stdout)
    created = sum(1 for a in report["applied"] if a["status"] == "created")
    if created != 2 * count:
        raise RuntimeError(f"configctl import created {created} documents, expected {2 * count}")

    gateway = ConsulGateway(env.consul_addr, pool_size=RAW_THREADS + 2)
    raw_layout = KeyLayout(f"bench-raw/bulk-{uuid.uuid4().hex[:6]}")
    transactions = _raw_transactions(raw_layout, namespace, names)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(RAW_THREADS) as pool:
        list(pool.map(gateway.txn, transactions))
    raw_import_s = time.perf_counter() - t0
    print(f"  import: configctl {import_s:.1f}s, raw {raw_import_s:.1f}s", flush=True)

    # Listing a namespace of `count` configs.
    http = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    raw_http = requests.Session()
    listing = ok(http.get(f"/api/v1/configs/{namespace}"))
    assert len(listing["configs"]) == count, len(listing["configs"])
    heads_url = f"{env.consul_addr}/v1/kv/{layout.heads_prefix(namespace)}"
    full_configd: list[float] = []
    full_raw: list[float] = []
    for _ in range(max(1, repeat // 4)):  # interleaved; informational: the whole namespace in one response
        full_configd += _timed(lambda: ok(http.get(f"/api/v1/configs/{namespace}")), 1)
        full_raw += _timed(lambda: raw_http.get(heads_url, params={"recurse": "1"}).json(), 1)

    heads_prefix = layout.heads_prefix(namespace)

    def configd_list_walk(samples: list[float]) -> int:
        after: str | None = None
        seen = 0
        while True:
            params: dict[str, Any] = {"limit": page} if after is None else {"limit": page, "after": after}
            t0 = time.perf_counter()
            body = ok(http.get(f"/api/v1/configs/{namespace}", params=params))
            samples.append(time.perf_counter() - t0)
            seen += len(body["configs"])
            after = body["next_after"]
            if after is None:
                return seen

    def raw_list_walk(samples: list[float]) -> int:
        seen = 0
        offset = 0
        while True:
            t0 = time.perf_counter()
            keys = gateway.keys(heads_prefix)
            batch = keys[offset : offset + page]
            entries = [
                e
                for start in range(0, len(batch), 64)
                for e in gateway.txn([op_get(k) for k in batch[start : start + 64]])
            ]
            [json.loads(e.value) for e in entries]
            samples.append(time.perf_counter() - t0)
            seen += len(batch)
            offset += page
            if offset >= len(keys):
                return seen

    list_configd: list[float] = []
    list_raw: list[float] = []
    for _ in range(max(1, repeat // 10)):
        assert configd_list_walk(list_configd) == count
        assert raw_list_walk(list_raw) == count

    # A config with `versions` versions, its history read page by page.
    setup_configs(server, "history", ["long"])
    for v in range(2, versions + 1):
        ok(http.put("/api/v1/configs/history/long", json={"data": config_data(v)}))
    versions_prefix = layout.versions_prefix("history", "long")

    def configd_walk(samples: list[float]) -> int:
        before: int | None = None
        seen = 0
        while True:
            params: dict[str, Any] = {"limit": page} if before is None else {"limit": page, "before": before}
            t0 = time.perf_counter()
            body = ok(http.get("/api/v1/configs/history/long/versions", params=params))
            samples.append(time.perf_counter() - t0)
            seen += len(body["versions"])
            before = body["next_before"]
            if before is None:
                return seen

    def raw_walk(samples: list[float]) -> int:
        seen = 0
        offset = 0
        while True:
            t0 = time.perf_counter()
            keys = sorted(gateway.keys(versions_prefix), reverse=True)
            batch = keys[offset : offset + page]
            entries = [
                e
                for start in range(0, len(batch), 64)
                for e in gateway.txn([op_get(k) for k in batch[start : start + 64]])
            ]
            [json.loads(e.value) for e in entries]
            samples.append(time.perf_counter() - t0)
            seen += len(batch)
            offset += page
            if offset >= len(keys):
                return seen

    hist_configd: list[float] = []
    hist_raw: list[float] = []
    walks = max(1, repeat // 10)
    for _ in range(walks):
        assert configd_walk(hist_configd) == versions
        assert raw_walk(hist_raw) == versions
    http.close()
    gateway.close()
    server.stop()

    list_c, list_r = summary_ms(list_configd), summary_ms(list_raw)
    full_c, full_r = summary_ms(full_configd), summary_ms(full_raw)
    hist_c, hist_r = summary_ms(hist_configd), summary_ms(hist_raw)
    result = {
        "import": {
            "configs": count,
            "documents": 2 * count,
            "configctl_s": round(import_s, 2),
            "raw_s": round(raw_import_s, 3),
            "ratio": ratio(import_s, raw_import_s),
            "configs_per_s": round(count / import_s, 1),
            "raw_transactions": len(transactions),
            "raw_operations": sum(len(t) for t in transactions),
            "raw_threads": RAW_THREADS,
            "target_s": 20,
            "target_met": import_s < 20,
        },
        "listing_full": {
            "configs": count,
            "configd": full_c,
            "raw": full_r,
            "p99_ratio": ratio(full_c["p99_ms"], full_r["p99_ms"]),
        },
        "listing": {
            "configs": count,
            "page": page,
            "configd": list_c,
            "raw": list_r,
            "p99_ratio": ratio(list_c["p99_ms"], list_r["p99_ms"]),
            "target_p99_ms": 100,
            "target_met": list_c["p99_ms"] < 100,
        },
        "history": {
            "versions": versions,
            "page": page,
            "configd": hist_c,
            "raw": hist_r,
            "p99_ratio": ratio(hist_c["p99_ms"], hist_r["p99_ms"]),
            "target_p99_ms": 100,
            "target_met": hist_c["p99_ms"] < 100,
        },
    }
    print(f"  listing {list_c} raw {list_r}\n  history {hist_c} raw {hist_r}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with BenchEnv() as env:
        print(json.dumps(run(env, args.count, args.versions, args.page, args.repeat), indent=2))


if __name__ == "__main__":
    main()
