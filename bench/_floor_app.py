"""The floor of a push: a FastAPI app on the same server stack as configd (uvicorn, httptools, uvloop) whose
endpoints do nothing (``/noop``), only commit the push's 4-op transaction through ``ConsulGateway`` (``/txn``,
a sync endpoint like configd's push), or only write one key (``/kv/<key>?value=``). No auth, no body, no
validation, no records: no server built on this stack can push faster, so its figures over raw bound what the
throughput and propagation ratios can reach.

``/blob/<key>?seq=`` is the large-config floor (``bench.large``): it receives a document's bytes, hashes them,
gzips them (configd's level) into chunks of configd's size, PUTs each, then a marker ``seq:sha256:chunks``. No
parsing, no validation, no records: what any server must do to store a large document in Consul and announce it.
``&parse=1`` adds what a server must do to look inside it: parse the body and store the canonical JSON.

``python -m bench._floor_app CONSUL_ADDR PORT PREFIX WORKERS VERSION_BYTES HEAD_BYTES AUDIT_BYTES`` (started by
``bench.throughput``, with as many worker processes as the configd server it is compared with).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

from configd_core.consul import ConsulGateway, op_cas, op_check_index, op_set
from configd_core.gc_pause import paused_gc
from configd_core.layout import CHUNK_BYTES
from configd_core.records import GZIP_LEVEL, canonical_json


def create(consul_addr: str, prefix: str, sizes: dict[str, int]) -> FastAPI:
    gateway = ConsulGateway(consul_addr, pool_size=64)
    schema_key = f"{prefix}/schema"
    gateway.put(schema_key, b"{}")
    schema = gateway.get(schema_key)
    assert schema is not None
    counter = itertools.count()
    prefix = f"{prefix}/{os.getpid()}"  # worker processes never write the same keys
    app = FastAPI()

    @app.put("/noop")
    async def noop() -> dict[str, Any]:
        return {"status": "ok"}

    @app.put("/kv/{key:path}")
    def kv(key: str, value: str) -> dict[str, Any]:
        """One plain Consul write behind the same HTTP hop (the propagation benchmark's floor)."""
        gateway.put(key, value.encode())
        return {"status": "created"}

    @app.put("/blob/{key:path}")
    async def blob(key: str, seq: int, request: Request, parse: bool = False) -> dict[str, Any]:
        """A large document stored as gzip chunks and announced by a marker key (the large-config floor).

        With ``parse``, the body is configd's push body (``{"data": …}``): parsed (plain ``json.loads``, the
        collector paused as configd does) and stored as its canonical JSON — the least a server must add to look
        inside the document (to validate it) and to hash its content rather than its bytes."""
        body = await request.body()
        if parse:
            with paused_gc(len(body)):
                data = json.loads(body)["data"]
            body = canonical_json(data)
        sha = hashlib.sha256(body).hexdigest()
        packed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        chunks = [packed[i : i + CHUNK_BYTES] for i in range(0, len(packed), CHUNK_BYTES)]
        for i, chunk in enumerate(chunks):
            gateway.put(f"{key}/chunks/{i:04d}", chunk)
        gateway.put(f"{key}/marker", f"{seq}:{sha}:{len(chunks)}".encode())
        return {"status": "created"}

    @app.put("/txn/{worker}")
    def txn(worker: int) -> dict[str, Any]:
        i = next(counter)
        gateway.txn(
            [
                op_check_index(schema_key, schema.modify_index),
                op_cas(f"{prefix}/{worker}/versions/{i}", b"v" * sizes["version"], 0),
                op_set(f"{prefix}/{worker}/head", b"h" * sizes["head"]),
                op_set(f"{prefix}/{worker}/audit/{i}", b"a" * sizes["audit"]),
            ]
        )
        return {"status": "created"}

    return app


def app_from_environment() -> FastAPI:
    spec = json.loads(os.environ["CONFIGD_BENCH_FLOOR"])
    return create(spec["consul"], spec["prefix"], spec["sizes"])


def main() -> None:
    consul_addr, port, prefix, workers, version, head, audit = sys.argv[1:8]
    sizes = {"version": int(version), "head": int(head), "audit": int(audit)}
    os.environ["CONFIGD_BENCH_FLOOR"] = json.dumps({"consul": consul_addr, "prefix": prefix, "sizes": sizes})
    uvicorn.run(
        "bench._floor_app:app_from_environment",
        factory=True,
        host="127.0.0.1",
        port=int(port),
        workers=int(workers),
        log_level="warning",
    )


if __name__ == "__main__":
    main()
