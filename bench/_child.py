"""A watching process for the benchmarks (``python -m bench._child configd|raw ...``).

It reports on stdout, one line each: ``READY``, ``EVT <name> <version> <time.time() at callback return>``,
``STATS <json>`` (answering ``STATS`` on stdin). Parent and children read the same wall clock (one machine).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import threading
import time
from typing import Any

_OUT = threading.Lock()


def say(line: str) -> None:
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def stats() -> dict[str, Any]:
    """This process's resident memory, OS threads and CPU seconds so far (Linux /proc)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    times = os.times()
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "cpu_s": round(times.user + times.system, 4),
        "time": time.time(),
    }


def serve_stdin() -> None:
    for line in sys.stdin:
        if line.strip() == "STATS":
            say("STATS " + json.dumps(stats()))
        elif line.strip() == "EXIT":
            break


def _model(kind: str) -> type[Any]:
    from pydantic import BaseModel
    from pydantic_settings import BaseSettings, SettingsConfigDict

    if kind == "loose":

        class Loose(BaseSettings):
            model_config = SettingsConfigDict(extra="ignore")
            seq: int = 0

        return Loose

    if kind == "large":

        class Item(BaseModel):
            id: int
            name: str
            weight: float
            tags: list[str]

        class Catalog(BaseSettings):
            model_config = SettingsConfigDict(extra="ignore")
            seq: int = 0
            items: list[Item] = []

        return Catalog

    class Service(BaseSettings):
        model_config = SettingsConfigDict(extra="forbid")
        seq: int
        timeout_ms: int
        retries: int
        pool_size: int
        rate_limit: float
        ratio: float
        currency: str
        region: str
        endpoint: str
        owner: str
        log_level: str
        feature_a: bool
        feature_b: bool
        feature_c: bool
        max_body_kb: int
        cache_ttl_s: int
        backoff_s: float
        queue: str
        replicas: int
        tags: list[str]

    return Service


def run_configd(args: argparse.Namespace) -> None:
    from configd_client import ConfigClient

    model = _model(args.model)
    say("BASE " + json.dumps(stats()))
    client = ConfigClient(
        args.consul,
        prefix=args.prefix,
        cache_dir=args.cache_dir,
        application="bench",
        instance_key=args.instance_key or None,
    )
    for name in args.names.split(","):
        live = client.settings(model, f"{args.namespace}/{name}", timeout=60)

        def report(event: Any, name: str = name) -> None:
            say(f"EVT {name} {event.version} {time.time():.6f}")

        live.on_change(report, inline=args.callbacks == "inline")
    say("READY " + json.dumps(stats()))
    serve_stdin()
    client.close()


def run_raw(args: argparse.Namespace) -> None:
    """One blocking query on one key through the same Consul client the SDK uses (``ConsulGateway``: py-consul
    on urllib3), doing nothing after a wake but decode the value (and, with ``--chunks``, read and parse them).

    A marker ``seq:sha256:chunks`` (the large-config floor, ``bench._floor_app``) is handled as the least any SDK
    must do: read the chunks, gunzip, check the sha256, parse, and build the ``--model`` settings object."""
    from configd_core.blocking import next_wait_index
    from configd_core.consul import ConsulGateway
    from configd_core.gc_pause import paused_gc

    say("BASE " + json.dumps(stats()))
    model = _model(args.model) if args.chunks else None  # pydantic only where a floor may need it
    if args.heads:
        from configd_client._source import SettingsFactory  # the fastest build known: the SDK's own
        from configd_core.records import HeadRecord

        typed = SettingsFactory(_model(args.model))
    gateway = ConsulGateway(args.consul, timeout=70)
    ready = threading.Event()

    def watch() -> None:
        index = 0
        while True:
            try:
                index = step(index)
            except Exception as exc:  # keep watching, as a real watcher would
                say(f"ERR {exc!r}")
                index = 0
                time.sleep(0.5)

    seen: dict[str, int] = {}  # --heads: each head's ModifyIndex as last applied

    def step(index: int) -> int:
        if index == 0:
            returned, entries = gateway.list(args.key)
        else:
            returned, entries = gateway.list(args.key, index=index, wait="55s")
        changed = index != 0 and returned != index
        index = next_wait_index(index, returned)
        if not ready.is_set():
            seen.update((e.key, e.modify_index) for e in entries)
            ready.set()
            return index
        if args.heads:
            # The typed floor: the least an SDK that watches a namespace and builds a typed object must do per
            # change — find the moved heads in the one answer, parse each, check its inline document against its
            # sha256, build the settings model (with the SDK's own builder, the fastest known). No cache,
            # registration, callbacks machinery or bookkeeping.
            for moved in entries:
                if seen.get(moved.key) == moved.modify_index:
                    continue
                seen[moved.key] = moved.modify_index
                head = HeadRecord.from_bytes(moved.value)
                typed.build(head.inline_data() or {}, "configd", head.name)
                say(f"EVT {head.name} {head.version} {time.time():.6f}")
            return index
        entry = next((e for e in entries if e.key == args.key), None)
        if not changed or entry is None:
            return index
        value = entry.value.decode()
        if args.chunks and ":" in value:
            # The large-config floor's SDK side: what any client must do with the document the floor stored
            # (with the garbage collector paused, as configd's client does: a trick any client can use).
            value, sha, count = value.split(":")
            blob = b"".join(gateway.get_values([f"{args.chunks}{i:04d}" for i in range(int(count))]))
            document = gzip.decompress(blob)
            if hashlib.sha256(document).hexdigest() != sha:
                raise ValueError("the floor's document does not match its sha256")
            assert model is not None
            with paused_gc(len(document)):
                model(**json.loads(document))
        elif args.chunks:
            # The quickest read raw Consul offers: the chunk names, then each value with ?raw (no JSON, no base64);
            # parsed with the garbage collector paused, like configd's client and the floor.
            blob = b"".join(gateway.get_values(gateway.keys(args.chunks)))
            document = gzip.decompress(blob)
            with paused_gc(len(document)):
                json.loads(document)
        say(f"EVT {args.key} {value} {time.time():.6f}")
        return index

    threading.Thread(target=watch, daemon=True).start()
    ready.wait(60)
    say("READY " + json.dumps(stats()))
    serve_stdin()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["configd", "raw"])
    parser.add_argument("--consul", required=True)
    parser.add_argument("--prefix", default="configd")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--names", default="")
    parser.add_argument("--model", default="fields", choices=["fields", "large", "loose"])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--key", default="")
    parser.add_argument(
        "--callbacks", default="pool", choices=["pool", "inline"], help="configd: where on_change callbacks run"
    )
    parser.add_argument("--instance-key", default="", help="configd: the instance key (rollout membership)")
    parser.add_argument("--chunks", default="", help="raw: after each wake, read and decode this chunk prefix")
    parser.add_argument(
        "--heads",
        action="store_true",
        help="raw: --key is a prefix of head records; build each moved one (typed floor)",
    )
    args = parser.parse_args()
    (run_configd if args.mode == "configd" else run_raw)(args)


if __name__ == "__main__":
    main()
