"""4. Large config: a 4 MB and an 8 MB config from the start of its push to a client process's on_change callback,
beside raw Consul writing the same gzip-compressed chunks (one PUT each, then a marker key) and a raw watcher that
wakes on the marker, reads the chunks, gunzips and parses them.

The floor is what any config service on this stack must do with the same document: a FastAPI endpoint on
configd's server stack receives its bytes, hashes and gzips them, PUTs the chunks and a marker
(``bench._floor_app``); a watcher wakes, reads the chunks, gunzips, checks the sha256, parses and builds the
same pydantic-settings model the configd client builds. No auth, validation, canonical JSON, versions or diff.
The parsing floor adds what a server must do to look inside the document at all: it receives configd's push body,
parses it and stores the canonical JSON. configd, raw and both floors alternate, so all see the same load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from typing import Any

import httpx

from configd_core.consul import ConsulGateway
from configd_core.layout import MAX_CONFIG_BYTES
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


def run_size(
    env: BenchEnv, http: httpx.Client, prefix: str, floor_url: str, size_mb: float, pushes: int
) -> dict[str, Any]:
    """configd, raw and floor, interleaved, for one document size (a config of its own)."""
    # 8 MB means as close to configd's limit as a catalog gets (its last item may pass the size asked).
    size = min(int(size_mb * 1024 * 1024), MAX_CONFIG_BYTES - 4096)
    namespace, name = "large", f"catalog-{size_mb:g}mb".replace(".", "-")
    stamp = f"{int(time.time())}-{name}"
    raw_prefix, floor_prefix = f"bench-raw/large-{stamp}", f"bench-raw/floor-{stamp}"
    raw = ConsulGateway(env.consul_addr)
    ok(http.put(f"/api/v1/schemas/{namespace}/{name}", json=LOOSE_SCHEMA))
    ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": catalog(size, 0)}))
    raw.put(f"{raw_prefix}/marker", b"0")
    raw.put(f"{floor_prefix}/marker", b"0")
    children = Children(env)
    children.spawn(
        "configd",
        *("--consul", env.consul_addr, "--prefix", prefix, "--namespace", namespace, "--names", name),
        *("--model", "large", "--cache-dir", str(env.workdir / f"cache-{name}")),
    )
    children.spawn(
        "raw", "--consul", env.consul_addr, "--key", f"{raw_prefix}/marker", "--chunks", f"{raw_prefix}/chunks/"
    )
    children.spawn(
        "raw",
        *("--consul", env.consul_addr, "--key", f"{floor_prefix}/marker", "--chunks", f"{floor_prefix}/chunks/"),
        *("--model", "large"),
    )
    children.wait_ready()
    configd_s: list[float] = []
    server_s: list[float] = []
    raw_s: list[float] = []
    floor_s: list[float] = []
    parsed_s: list[float] = []
    info: dict[str, Any] = {}
    with httpx.Client(base_url=floor_url, timeout=120) as floor:
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
            t0 = time.time()
            answer = floor.put(f"/blob/{floor_prefix}", params={"seq": seq}, content=canonical)
            answer.raise_for_status()
            floor_s += [e.at - t0 for e in children.collect(f"{floor_prefix}/marker", str(seq), 1, timeout=120)]
            time.sleep(0.2)
            t0 = time.time()
            answer = floor.put(f"/blob/{floor_prefix}", params={"seq": -seq, "parse": True}, content=body_bytes)
            answer.raise_for_status()
            parsed_s += [e.at - t0 for e in children.collect(f"{floor_prefix}/marker", str(-seq), 1, timeout=120)]
            time.sleep(0.2)
    children.close()
    c, r, f, p = summary_ms(configd_s), summary_ms(raw_s), summary_ms(floor_s), summary_ms(parsed_s)
    print(
        f"  large {size_mb:g} MB: configd p50 {c['p50_ms']} ms (push HTTP call alone p50 "
        f"{summary_ms(server_s)['p50_ms']} ms), raw p50 {r['p50_ms']} ms, floor p50 {f['p50_ms']} ms, "
        f"parsing floor p50 {p['p50_ms']} ms",
        flush=True,
    )
    return {
        **info,
        "size_mb": size_mb,
        "pushes": pushes,
        "configd": c,
        "push_call": summary_ms(server_s),
        "raw": r,
        "floor": f,
        "parsing_floor": p,
        "p50_ratio": ratio(c["p50_ms"], r["p50_ms"]),
        "max_ratio": ratio(c["max_ms"], r["max_ms"]),
        "floor_p50_ratio": ratio(f["p50_ms"], r["p50_ms"]),
        "over_floor_p50": ratio(c["p50_ms"], f["p50_ms"]),
        "parsing_floor_p50_ratio": ratio(p["p50_ms"], r["p50_ms"]),
        "over_parsing_floor_p50": ratio(c["p50_ms"], p["p50_ms"]),
        "target_met": ratio(c["p50_ms"], r["p50_ms"]) <= 3,
    }


def run(env: BenchEnv, size_mb: float | list[float], pushes: int) -> dict[str, Any]:
    """Every size in ``size_mb``; the first size's figures are also the section's top level (earlier reports)."""
    sizes = size_mb if isinstance(size_mb, list) else [size_mb]
    server = env.start_server()
    floor_url, floor_process = env.start_floor()
    with server.client() as http:
        by_size = [run_size(env, http, server.prefix, floor_url, size, pushes) for size in sizes]
    floor_process.terminate()
    floor_process.wait(timeout=15)
    server.stop()
    return {**by_size[0], "sizes": by_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=float, nargs="+", default=[4, 8])
    parser.add_argument("--pushes", type=int, default=5)
    args = parser.parse_args()
    with BenchEnv() as env:
        print(json.dumps(run(env, args.size_mb, args.pushes), indent=2))


if __name__ == "__main__":
    main()
