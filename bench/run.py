"""Run every benchmark against one Consul dev agent and write the raw JSON, docs/benchmarks.md and the plot.

``python -m bench.run`` (what ``make bench`` runs); ``--quick`` uses tiny parameters (the smoke test).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from . import bulk, callbacks, idle, large, propagation, relay, report, startup, throughput
from ._env import ROOT, BenchEnv, machine_load

FULL: dict[str, dict[str, Any]] = {
    "propagation": {"counts": [1, 10, 50], "pushes": 30},
    # As a server is deployed: one worker process per core (configd is stateless; the store is CAS-guarded).
    "throughput": {"concurrencies": [1, 16], "seconds": 8, "workers": os.cpu_count() or 1},
    "bulk": {"count": 10000, "versions": 1000, "page": 50, "repeat": 40},
    "large": {"size_mb": [4, 8], "pushes": 5},
    "idle": {"idle_seconds": 60},
    "idle_rollout": {"idle_seconds": 60},
    "relay": {
        "watchers": 10000,
        "processes": 3,
        "pushes": 5,
        "settle": 3.0,
        "sdk_clients": 1000,
        "sdk_processes": 10,
        "sdk_pushes": 5,
        "sdk_settle": 8.0,
    },
    "startup": {"runs": 9},
    "callbacks": {"counts": [10, 200]},
}
QUICK: dict[str, dict[str, Any]] = {
    "propagation": {"counts": [1, 2], "pushes": 3},
    "throughput": {"concurrencies": [1, 2], "seconds": 1, "workers": 2},
    "bulk": {"count": 20, "versions": 12, "page": 5, "repeat": 3},
    "large": {"size_mb": [1], "pushes": 1},
    "idle": {"idle_seconds": 2},
    "idle_rollout": {"idle_seconds": 2},
    "relay": {
        "watchers": 200,
        "processes": 2,
        "pushes": 2,
        "settle": 1.0,
        "sdk_clients": 20,
        "sdk_processes": 2,
        "sdk_pushes": 2,
        "sdk_settle": 2.0,
    },
    "startup": {"runs": 3},
    "callbacks": {"counts": [2, 10]},
}
SECTIONS = {
    "propagation": propagation.run,
    "throughput": throughput.run,
    "bulk": bulk.run,
    "large": large.run,
    "idle": idle.run,
    "idle_rollout": functools.partial(idle.run, rollout=True),
    "relay": relay.run,
    "startup": startup.run,
    "callbacks": callbacks.run,
}


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny parameters: proves the scripts work")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks.png")
    parser.add_argument(
        "--merge", action="store_true", help="replace only the sections run in the existing --out file, then re-render"
    )
    args = parser.parse_args()
    params = QUICK if args.quick else FULL
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "quick": args.quick,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": machine_load(),
            "params": params,
        }
    }
    t0 = time.monotonic()
    with BenchEnv() as env:
        for section in args.only.split(","):
            print(f"== {section} {params[section]}", flush=True)
            started = time.monotonic()
            results[section] = SECTIONS[section](env, **params[section])
            results[section]["elapsed_s"] = round(time.monotonic() - started, 1)
            results[section]["load_after"] = machine_load()
    results["meta"]["load_after"] = machine_load()
    results["meta"]["elapsed_s"] = elapsed = round(time.monotonic() - t0, 1)
    if args.merge and args.out.exists():
        merged = json.loads(args.out.read_text())
        for section in args.only.split(","):
            run_meta = {k: results["meta"][k] for k in ("started_at", "commit", "load_before", "load_after")}
            merged[section] = {**results[section], "measured": run_meta}
        results = merged
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    report.write(results, args.doc, args.plot, results_path=os.path.relpath(args.out, args.doc.parent))
    print(f"wrote {args.out}, {args.doc}, {args.plot} in {elapsed} s", flush=True)


if __name__ == "__main__":
    main()
