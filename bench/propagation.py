"""1. Propagation: push → on_change callback returned, in N separate client processes, beside raw Consul.

configd: each child runs a ConfigClient watching 10 configs of one namespace (a 20-field model); the parent
PUTs one of them through the HTTP API. Raw: each child holds one blocking GET on one key; the parent PUTs it.
Raw sides (the PUT and the watchers) use configd's own Consul client (``ConsulGateway``), so the ratio is
exactly what configd adds. Floor: the same raw watchers woken by a write made behind one FastAPI hop on configd's
server stack (``bench._floor_app``, which does nothing but the write): what any server in between costs.
Required floor (issue 17.3): a push that validates and records (``/push`` of ``bench._floor_app``: configd's
validator and records, nothing else) behind the same hop, applied by typed watchers (``bench._child raw --heads``:
one blocking query on a namespace of 10 heads, the moved head parsed, its inline document checked against its
sha256 and built as the same 20-field model by the SDK's own builder, nothing else): the least a schema-checked,
typed, namespace-watching config center can do per change, on this stack.
Pushes alternate configd / raw / floor / required floor so all see the same machine load. Latency = child's
time.time() when the callback returned − parent's time.time() just before the HTTP call (one machine, one clock).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx

from configd_core.consul import ConsulGateway

from ._children import Children
from ._env import SCHEMA, BenchEnv, config_data, ok, setup_configs
from ._floor_app import FLOOR_TOKEN
from ._stats import ratio, summary_ms

CONFIGS_PER_CLIENT = 10
_FLOOR_AUTH = {"Authorization": f"Bearer {FLOOR_TOKEN}"}


def run(env: BenchEnv, counts: list[int], pushes: int, pause: float = 0.1, callbacks: str = "inline") -> dict[str, Any]:
    server = env.start_server()
    namespace = "propagation"
    names = [f"svc-{i:02d}" for i in range(CONFIGS_PER_CLIENT)]
    setup_configs(server, namespace, names)
    raw_key = f"bench-raw/propagation/{int(time.time() * 1000)}"
    raw = ConsulGateway(env.consul_addr)  # the Consul client configd itself uses: py-consul on urllib3
    raw.put(raw_key, b"0")
    floor_url, floor = env.start_floor(schema=SCHEMA)
    results: list[dict[str, Any]] = []
    versions = dict.fromkeys(names, 1)
    raw_seq = 0
    with server.client() as http, httpx.Client(base_url=floor_url, timeout=60) as floor_http:
        # Open the connections (bench → floor app → Consul) before measuring: every measured write reuses them.
        ok(floor_http.put(f"/kv/{raw_key}-warm-up", params={"value": "0"}))
        # The required floor's heads (one per config, as configd's namespace has), watched by the typed floor.
        typed_seq = 0
        for k in range(CONFIGS_PER_CLIENT):
            typed_seq += 1
            heads = ok(floor_http.put(f"/push/{k}", json={"data": config_data(typed_seq)}, headers=_FLOOR_AUTH))
        heads_prefix = heads["heads"]
        for n in counts:
            children = Children(env)
            cache = env.workdir / f"cache-{n}"
            for _ in range(n):
                children.spawn(
                    "configd",
                    "--consul",
                    env.consul_addr,
                    "--prefix",
                    server.prefix,
                    "--namespace",
                    namespace,
                    "--names",
                    ",".join(names),
                    "--cache-dir",
                    str(cache),
                    "--callbacks",
                    callbacks,
                )
                children.spawn("raw", "--consul", env.consul_addr, "--key", raw_key)
                children.spawn("raw", "--consul", env.consul_addr, "--key", heads_prefix, "--heads")
            started = time.monotonic()
            children.wait_ready()
            print(f"  N={n}: {3 * n} children ready in {time.monotonic() - started:.1f}s", flush=True)
            configd_s: list[float] = []
            raw_s: list[float] = []
            floor_s: list[float] = []
            typed_s: list[float] = []
            for i in range(pushes):
                name = names[i % len(names)]
                versions[name] += 1
                t0 = time.time()
                body = ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": config_data(versions[name])}))
                if body["version"] != versions[name]:
                    raise RuntimeError(f"expected v{versions[name]}, server wrote {body}")
                configd_s += [e.at - t0 for e in children.collect(name, str(versions[name]), n)]
                time.sleep(pause)
                raw_seq += 1
                t0 = time.time()
                raw.put(raw_key, str(raw_seq).encode())
                raw_s += [e.at - t0 for e in children.collect(raw_key, str(raw_seq), n)]
                time.sleep(pause)
                # The floor: the same raw watchers, woken by a write made behind one FastAPI hop (no configd work).
                raw_seq += 1
                t0 = time.time()
                ok(floor_http.put(f"/kv/{raw_key}", params={"value": str(raw_seq)}))
                floor_s += [e.at - t0 for e in children.collect(raw_key, str(raw_seq), n)]
                time.sleep(pause)
                # The required floor: a validated, recorded push behind the same hop, built by typed watchers.
                typed_seq += 1
                t0 = time.time()
                body = ok(
                    floor_http.put(
                        f"/push/{i % CONFIGS_PER_CLIENT}", json={"data": config_data(typed_seq)}, headers=_FLOOR_AUTH
                    )
                )
                typed_s += [e.at - t0 for e in children.collect(str(i % CONFIGS_PER_CLIENT), str(body["version"]), n)]
                time.sleep(pause)
            children.close()
            configd_sum, raw_sum, floor_sum = summary_ms(configd_s), summary_ms(raw_s), summary_ms(floor_s)
            typed_sum = summary_ms(typed_s)
            row = {
                "clients": n,
                "pushes": pushes,
                "configd": configd_sum,
                "raw": raw_sum,
                "floor": floor_sum,
                "floor_p99_ratio": ratio(floor_sum["p99_ms"], raw_sum["p99_ms"]),
                "required_floor": typed_sum,
                "required_over_floor_p99": ratio(typed_sum["p99_ms"], floor_sum["p99_ms"]),
                "configd_over_floor_p99": ratio(configd_sum["p99_ms"], floor_sum["p99_ms"]),
                "configd_over_required_p99": ratio(configd_sum["p99_ms"], typed_sum["p99_ms"]),
                "p99_ratio": ratio(configd_sum["p99_ms"], raw_sum["p99_ms"]),
                "p50_ratio": ratio(configd_sum["p50_ms"], raw_sum["p50_ms"]),
                "target_p99_ratio": 1.5,
            }
            row["target_met"] = row["p99_ratio"] <= 1.5
            print(
                f"  N={n}: configd {configd_sum} | raw {raw_sum} | floor {floor_sum} | "
                f"required {typed_sum} | p99 ratio {row['p99_ratio']} (floor {row['floor_p99_ratio']}) | "
                f"÷ floor p99: configd {row['configd_over_floor_p99']}, required {row['required_over_floor_p99']}",
                flush=True,
            )
            results.append(row)
    raw.close()
    floor.terminate()
    floor.wait(timeout=15)
    server.stop()
    return {"configs_per_client": CONFIGS_PER_CLIENT, "callbacks": callbacks, "rows": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--pushes", type=int, default=30)
    parser.add_argument("--callbacks", default="inline", choices=["inline", "pool"])
    args = parser.parse_args()
    with BenchEnv() as env:
        rows = run(env, [int(c) for c in args.clients.split(",")], args.pushes, callbacks=args.callbacks)
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
