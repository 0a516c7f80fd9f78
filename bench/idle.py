"""5 and 6. Client cost and Consul load of a process watching 10 configs, beside a raw Consul watcher.

With ``rollout=True`` (the ``idle_rollout`` section) the same is measured while two of the 10 configs have an
active rollout: one whose cohort lists this process (it runs the candidate) and one it is outside of — the
rollout record reaches it through the same one blocking query, so the figures should not move (issue 13).

One child runs a ConfigClient watching 10 configs of one namespace (with an on_change callback each); another
holds one raw blocking GET (ConsulGateway, the SDK's own client; wait=55s, the SDK's default). Each talks to
Consul through its own counting proxy on loopback (``bench._proxy``), which counts connections and HTTP
requests and sees which requests Consul is holding (a blocking query is in flight with ``index=``).

Reported: resident memory and OS threads added (watching vs. after importing the library), CPU seconds over the
idle window, Consul requests per minute while idle, blocking queries and connections held (sampled every second).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import time
from typing import Any

import requests

from ._children import Children
from ._env import BenchEnv, config_data, ok, setup_configs
from ._proxy import CountingProxy
from ._stats import ratio

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _mode(values: list[int]) -> int:
    return collections.Counter(values).most_common(1)[0][0] if values else 0


INSTANCE_KEY = "bench-idle-process"


def run(env: BenchEnv, idle_seconds: float, rollout: bool = False) -> dict[str, Any]:
    server = env.start_server()
    namespace = "idle"
    names = [f"svc-{i:02d}" for i in range(10)]
    setup_configs(server, namespace, names)
    raw_key = f"bench-raw/idle/{int(time.time())}"
    raw_http = requests.Session()
    raw_http.put(f"{env.consul_addr}/v1/kv/{raw_key}", data=b"0").raise_for_status()
    host, port = env.consul_addr.removeprefix("http://").split(":")
    proxies = {"configd": CountingProxy(host, int(port)).start(), "raw": CountingProxy(host, int(port)).start()}
    children = Children(env)
    children.spawn(
        "configd",
        "--consul",
        proxies["configd"].address,
        "--prefix",
        server.prefix,
        "--namespace",
        namespace,
        "--names",
        ",".join(names),
        "--cache-dir",
        str(env.workdir / "cache-idle"),
        "--instance-key",
        INSTANCE_KEY,
    )
    children.spawn("raw", "--consul", proxies["raw"].address, "--key", raw_key)
    (c_base, c_ready), (r_base, r_ready) = children.wait_ready()
    # One change per config, so the callback threads exist: the steady state of a long-running service.
    with server.client() as http:
        for name in names:
            ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": config_data(1)}))
            children.collect(name, "2", 1)
        if rollout:  # two active rollouts: this process in the cohort of one (it runs v3), outside the other
            for name, cohort in ((names[0], [INSTANCE_KEY]), (names[1], [])):
                body = {
                    "data": config_data(2),
                    "cohort": {"instances": cohort},
                    "steps": [0],
                    "auto": False,
                }
                ok(http.post(f"/api/v1/configs/{namespace}/{name}/rollouts", json=body))
            children.collect(names[0], "3", 1)
    raw_http.put(f"{env.consul_addr}/v1/kv/{raw_key}", data=b"1").raise_for_status()
    children.collect(raw_key, "1", 1)
    # The SDK publishes its registration and writes its last-known-good cache 1-1.5 s after a change; idle
    # begins once those are done.
    time.sleep(3)
    c_steady, r_steady = children.stats(0), children.stats(1)
    start = time.time()
    samples: dict[str, list[dict[str, int]]] = {"configd": [], "raw": []}
    while time.time() - start < idle_seconds:
        for kind, proxy in proxies.items():
            samples[kind].append(proxy.snapshot())
        time.sleep(1)
    c_end, r_end = children.stats(0), children.stats(1)
    elapsed = time.time() - start
    children.close()
    for proxy in proxies.values():
        proxy.stop()
    server.stop()

    def figures(
        kind: str, base: dict[str, Any], ready: dict[str, Any], steady: dict[str, Any], end: dict[str, Any]
    ) -> dict[str, Any]:
        during = proxies[kind].requests_since(start)
        during = [r for r in during if r[0] <= start + elapsed]
        blocking = [s["blocking_in_flight"] for s in samples[kind]]
        conns = [s["open_connections"] for s in samples[kind]]
        return {
            "rss_added_kib_ready": ready["rss_kib"] - base["rss_kib"],
            "rss_added_kib_steady": steady["rss_kib"] - base["rss_kib"],
            "threads_added_ready": ready["threads"] - base["threads"],
            "threads_added_steady": steady["threads"] - base["threads"],
            "rss_total_kib": end["rss_kib"],
            "idle_seconds": round(elapsed, 1),
            "idle_cpu_s": round(end["cpu_s"] - steady["cpu_s"], 4),
            "idle_requests": len(during),
            "idle_requests_per_min": round(len(during) * 60 / elapsed, 1),
            "idle_request_kinds": dict(
                collections.Counter(f"{m} {_UUID.sub('<id>', t.split('?')[0])}" for _, m, t in during)
            ),
            "blocking_queries_held": {"typical": _mode(blocking), "max": max(blocking, default=0)},
            "connections_open": {"typical": _mode(conns), "max": max(conns, default=0)},
        }

    configd = figures("configd", c_base, c_ready, c_steady, c_end)
    raw = figures("raw", r_base, r_ready, r_steady, r_end)
    result = {
        "configs_watched": len(names),
        "active_rollouts": 2 if rollout else 0,
        "configd": configd,
        "raw": raw,
        "rss_ratio": ratio(configd["rss_added_kib_steady"], raw["rss_added_kib_steady"]),
        "requests_per_min_ratio": ratio(configd["idle_requests_per_min"], raw["idle_requests_per_min"]),
        "target_blocking_queries": 1,
        "target_met": configd["blocking_queries_held"]["typical"] == 1 and configd["blocking_queries_held"]["max"] == 1,
    }
    print(f"  idle: configd {configd}\n  idle: raw {raw}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    with BenchEnv() as env:
        print(json.dumps(run(env, args.idle_seconds), indent=2))


if __name__ == "__main__":
    main()
