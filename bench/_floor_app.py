"""The floor of a push: a FastAPI app on the same server stack as configd (uvicorn, httptools, uvloop) whose
endpoints do nothing (``/noop``), only commit the push's 4-op transaction through ``ConsulGateway`` (``/txn``,
a sync endpoint like configd's push), or only write one key (``/kv/<key>?value=``). No auth, no body, no
validation, no records: no server built on this stack can push faster, so its figures over raw bound what the
throughput and propagation ratios can reach.

``/push/{worker}`` is the *required* floor of a push (issue 17.4): ``/txn``'s transaction plus only what every
validated, authenticated, versioned and audited push must do — read the body, compare the bearer token, parse the
JSON, validate the document with configd's compiled validator (``configd.planning.validation``, formats and the
pattern budget included) against the schema of the benchmark, hash its canonical JSON, and write configd's own
version, head and audit records (``configd_core.records``) instead of bytes of their sizes. No review policy, no
rollout check, no name checks, no strict JSON hooks, no FastAPI body model, no metrics: nothing a push could skip.
Its throughput ÷ the floor's is the most any push that validates and records can reach on this stack. Its heads
(``<prefix>/heads/<worker>``, the answer's ``heads``) are what the propagation benchmark's typed floor watches.

``/blob/<key>?seq=`` is the large-config floor (``bench.large``): it receives a document's bytes, hashes them,
gzips them (configd's level) into chunks of configd's size, PUTs each, then a marker ``seq:sha256:chunks``. No
parsing, no validation, no records: what any server must do to store a large document in Consul and announce it.
``&parse=1`` adds what a server must do to look inside it: parse the body and store the canonical JSON.

``python -m bench._floor_app CONSUL_ADDR PORT PREFIX WORKERS VERSION_BYTES HEAD_BYTES AUDIT_BYTES [SCHEMA_JSON]``
(started by ``bench.throughput``, with as many worker processes as the configd server it is compared with).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import itertools
import json
import os
import sys
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request

from configd_core.consul import ConsulGateway, op_cas, op_check_index, op_set
from configd_core.gc_pause import paused_gc
from configd_core.layout import CHUNK_BYTES
from configd_core.records import (
    GZIP_LEVEL,
    AuditRecord,
    HeadRecord,
    SchemaRef,
    VersionRecord,
    canonical_json,
    head_inline,
    utcnow,
)

#: The bearer token ``/push`` accepts (the benchmark's admin token stands in; only its comparison is measured).
FLOOR_TOKEN = "bench-floor-token"


def create(consul_addr: str, prefix: str, sizes: dict[str, int], schema_doc: dict[str, Any] | None = None) -> FastAPI:
    from configd.planning.validation import compile_schema, config_errors  # the server's own validator

    validator = compile_schema(schema_doc or {"type": "object"})
    expected = f"Bearer {FLOOR_TOKEN}".encode()
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

    async def _document(request: Request) -> Any:
        """The body's document, as configd's push reads it before the thread-pool hop (an async dependency)."""
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            raise HTTPException(401)
        return json.loads(await request.body())["data"]

    @app.put("/push/{worker}", status_code=201)
    def push(worker: int, data: Any = Depends(_document)) -> dict[str, Any]:  # noqa: B008 (a local dependency)
        if config_errors(validator, data):
            raise HTTPException(422)
        canonical = canonical_json(data)
        sha = hashlib.sha256(canonical).hexdigest()
        i = next(counter)
        now = utcnow()
        ref = SchemaRef(namespace="floor", name=str(worker), version=1)
        common: dict[str, Any] = {"namespace": "floor", "name": str(worker), "version": i + 1, "sha256": sha}
        common["size"] = len(canonical)
        version = VersionRecord(**common, parent=i or None, schema_ref=ref, author="admin", created_at=now, data=data)
        head = HeadRecord(**common, schema_ref=ref, author="admin", created_at=now, data=head_inline(data, canonical))
        audit = AuditRecord(
            id=f"{now}-{i}", at=now, actor="admin", action="push", namespace="floor", name=str(worker),
            result="created", status=201, version=i + 1,
        )  # fmt: skip
        gateway.txn(
            [
                op_check_index(schema_key, schema.modify_index),
                op_cas(f"{prefix}/versions/{worker}/{i}", version.to_bytes(), 0),
                op_set(f"{prefix}/heads/{worker}", head.to_bytes()),
                op_set(f"{prefix}/audit/{worker}/{i}", audit.to_bytes()),
            ]
        )
        return {"status": "created", "version": i + 1, "heads": f"{prefix}/heads/"}

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
    return create(spec["consul"], spec["prefix"], spec["sizes"], spec.get("schema"))


def main() -> None:
    consul_addr, port, prefix, workers, version, head, audit = sys.argv[1:8]
    sizes = {"version": int(version), "head": int(head), "audit": int(audit)}
    schema = json.loads(sys.argv[8]) if len(sys.argv) > 8 else None  # the schema ``/push`` validates against
    spec = {"consul": consul_addr, "prefix": prefix, "sizes": sizes, "schema": schema}
    os.environ["CONFIGD_BENCH_FLOOR"] = json.dumps(spec)
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
