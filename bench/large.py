"""4. Large config: a 4 MB config from the start of its push to a client process's on_change callback, beside
raw Consul writing the same gzip-compressed chunks (one PUT each, then a marker key) and a raw watcher that
wakes on the marker, reads the chunks, gunzips and parses them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from typing import Any

from configd_core.consul import ConsulGateway
from configd_core.records import canonical_json, encode_data

from ._children import Children
from ._env import LOOSE_SCHEMA, BenchEnv, ok
from ._stats import ratio, summary_ms


def catalog(size_bytes: int, seq: int) -> dict[str, Any]:
    """About ``size_bytes`` of canonical JSON: items with pseudo-random names (compresses ~2-3x, like real data)."""
    rng = random.Random(seq)
    items = []
    total = 0
    while total < size_bytes:
        item = {
            "id": len(items),
            "name": f"item-{rng.getrandbits(64):016x}",
            "tags": [f"t-{rng.getrandbits(24):06x}", f"t-{rng.getrandbits(24):06x}"],
            "weight": round(rng.random(), 6),
        }
        total += len(json.dumps(item, separators=(",", ":"))) + 1
        items.append(item)
    return {"seq": seq, "items": items}


def run(env: BenchEnv, size_mb: float, pushes: int) -> dict[str, Any]:
    server = env.start_server()
    size = int(size_mb * 1024 * 1024)
    namespace, name = "large", "catalog"
    raw_prefix = f"bench-raw/large-{int(time.time())}"
    raw = ConsulGateway(env.consul_addr)
    with server.client() as http:
        ok(http.put(f"/api/v1/schemas/{namespace}/{name}", json=LOOSE_SCHEMA))
        ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": catalog(size, 0)}))
        raw.put(f"{raw_prefix}/marker", b"0")
        children = Children(env)
        children.spawn(
            "configd",
            "--consul",
            env.consul_addr,
            "--prefix",
            server.prefix,
            "--namespace",
            namespace,
            "--names",
            name,
            "--model",
            "large",
            "--cache-dir",
            str(env.workdir / "cache-large"),
        )
        children.spawn(
            "raw", "--consul", env.consul_addr, "--key", f"{raw_prefix}/marker", "--chunks", f"{raw_prefix}/chunks/"
        )
        children.wait_ready()
        configd_s: list[float] = []
        server_s: list[float] = []
        raw_s: list[float] = []
        info: dict[str, Any] = {}
        for seq in range(1, pushes + 1):
            data = catalog(size, seq)
            body_bytes = json.dumps({"data": data}).encode()
            t0 = time.time()
            body = ok(
                http.put(
                    f"/api/v1/configs/{namespace}/{name}",
                    content=body_bytes,
                    headers={"Content-Type": "application/json"},
                )
            )
            server_s.append(time.time() - t0)
            configd_s += [e.at - t0 for e in children.collect(name, str(body["version"]), 1, timeout=120)]
            canonical = canonical_json(data)
            encoded = encode_data(data, canonical)
            chunks = encoded.chunks or (gzip.compress(canonical, compresslevel=6, mtime=0),)
            info = {
                "canonical_bytes": len(canonical),
                "compressed_bytes": sum(map(len, chunks)),
                "chunks": len(chunks),
                "encoding": encoded.encoding,
            }
            time.sleep(0.2)
            t0 = time.time()
            for i, chunk in enumerate(chunks):
                raw.put(f"{raw_prefix}/chunks/{i:06d}", chunk)
            raw.put(f"{raw_prefix}/marker", str(seq).encode())
            raw_s += [e.at - t0 for e in children.collect(f"{raw_prefix}/marker", str(seq), 1, timeout=120)]
            time.sleep(0.2)
        children.close()
    server.stop()
    c, r = summary_ms(configd_s), summary_ms(raw_s)
    print(f"  large: configd {c} (push HTTP call alone p50 {summary_ms(server_s)['p50_ms']} ms) raw {r}", flush=True)
    return {
        **info,
        "pushes": pushes,
        "configd": c,
        "push_call": summary_ms(server_s),
        "raw": r,
        "p50_ratio": ratio(c["p50_ms"], r["p50_ms"]),
        "max_ratio": ratio(c["max_ms"], r["max_ms"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=float, default=4)
    parser.add_argument("--pushes", type=int, default=5)
    args = parser.parse_args()
    with BenchEnv() as env:
        print(json.dumps(run(env, args.size_mb, args.pushes), indent=2))


if __name__ == "__main__":
    main()
