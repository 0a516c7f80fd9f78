"""8. Threads and memory of one process watching many configs, each with an ``on_change`` callback.

One child process (``bench._child configd``) watches ``count`` configs of one namespace with a callback each;
after one change per config (every callback has run once) it reports its OS threads and RSS, counted from just
after ``import configd_client`` (BASE) — the figures a long-running service holds.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ._children import Children
from ._env import LOOSE_SCHEMA, BenchEnv, Server, ok


def _setup(server: Server, namespace: str, names: list[str]) -> None:
    with server.client() as http:
        for name in names:
            ok(http.put(f"/api/v1/schemas/{namespace}/{name}", json=LOOSE_SCHEMA))
            ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": {"seq": 0}}))


def _one(env: BenchEnv, server: Server, count: int) -> dict[str, Any]:
    namespace = f"callbacks{count}"
    names = [f"svc-{i:03d}" for i in range(count)]
    _setup(server, namespace, names)
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
        ",".join(names),
        "--model",
        "loose",
        "--cache-dir",
        str(env.workdir / f"cache-callbacks-{count}"),
    )
    ((base, ready),) = children.wait_ready()
    with server.client() as http:
        for name in names:
            ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": {"seq": 1}}))
    waiting, deadline = set(names), time.monotonic() + 60
    while waiting:  # events of every config, in whatever order the callbacks run
        event = children.events.get(timeout=max(0.1, deadline - time.monotonic()))
        if event.version == "2":
            waiting.discard(event.name)
    steady = children.stats(0)
    children.close()
    return {
        "configs": count,
        "threads_added_ready": ready["threads"] - base["threads"],
        "threads_added_steady": steady["threads"] - base["threads"],
        "threads_total_steady": steady["threads"],
        "rss_added_kib_ready": ready["rss_kib"] - base["rss_kib"],
        "rss_added_kib_steady": steady["rss_kib"] - base["rss_kib"],
        "rss_total_kib_steady": steady["rss_kib"],
    }


def run(env: BenchEnv, counts: list[int]) -> dict[str, Any]:
    server = env.start_server()
    rows = [_one(env, server, count) for count in counts]
    server.stop()
    for row in rows:
        print(f"  callbacks: {row}", flush=True)
    return {"rows": rows}


def render(result: dict[str, Any]) -> list[str]:
    out = ["## 8. Threads and memory per watched config\n"]
    out.append(
        "One process, a `ConfigClient` watching N configs of one namespace with an `on_change` callback each; "
        "counted from just after `import configd_client` to after one change per config (every callback has run). "
        'Callbacks run on one process-wide pool of at most 4 threads (docs/client.md, "Callbacks"); the rest is '
        "the watcher, the registration and the cache writer.\n"
    )
    out.append(
        "| configs watched | threads added, watching / steady | threads in the process | "
        "RSS added, watching / steady (KiB) | RSS of the process (KiB) |"
    )
    out.append("|---|---|---|---|---|")
    for r in result["rows"]:
        out.append(
            f"| {r['configs']} | {r['threads_added_ready']} / {r['threads_added_steady']} | "
            f"{r['threads_total_steady']} | {r['rss_added_kib_ready']} / {r['rss_added_kib_steady']} | "
            f"{r['rss_total_kib_steady']} |"
        )
    out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="10,200")
    args = parser.parse_args()
    with BenchEnv() as env:
        print(json.dumps(run(env, [int(c) for c in args.counts.split(",")]), indent=2))


if __name__ == "__main__":
    main()
