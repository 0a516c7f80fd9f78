"""Which downstream requests the relay answers from memory, and Consul's rules for answering them (no I/O).

The relay serves the part of Consul's KV HTTP API that watchers use (``GET /v1/kv/<key>`` with ``recurse``,
``keys``, ``separator``, ``raw``, ``index``, ``wait``, ``stale``, ``token``); a request with any other parameter
(``consistent``, ``dc``, ``ns``, ``filter``, ``cached``, …) or any other method or path is forwarded to Consul
unchanged. Consul's own rules, as its "Blocking Queries" documentation and ``agent/consul/rpc.go`` state them:

- a query answers at once when its index is absent or 0, or when the current index is above it; otherwise it
  waits until the index moves above it, or until ``wait`` (default 5 min, at most 10 min) plus a random
  ``wait/16`` of jitter has passed, then answers the current data and index (a wake-up is only "maybe changed");
- a prefix's X-Consul-Index is the highest ModifyIndex of its part of the KV table, so it can move without the
  prefix's data changing, and it can go backwards (snapshot restore): the relay passes on what Consul says.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

#: Consul's default ``wait`` of a blocking query (``defaultQueryTime``) and its cap (``maxQueryTime``).
DEFAULT_WAIT_SECONDS = 300.0
MAX_WAIT_SECONDS = 600.0
#: Consul adds up to ``wait / JITTER_FRACTION`` to a blocking query's wait (``lib.RandomStagger``).
JITTER_FRACTION = 16

KV_PATH = "/v1/kv/"
_SERVED = frozenset({"recurse", "keys", "separator", "raw", "index", "wait", "stale", "token"})
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Shape:
    """One distinct KV read, as the relay asks Consul for it: one upstream blocking query per shape.

    ``key`` is the URL path after ``/v1/kv/`` as the client sent it (still percent-encoded). Consul ignores
    ``recurse`` and ``raw`` on a ``keys`` listing and ``raw`` on a recursive read, so they are dropped there.
    """

    key: str
    recurse: bool = False
    keys: bool = False
    separator: str | None = None
    raw: bool = False

    def __post_init__(self) -> None:
        # Every request and every verdict looks its shape up in a dict: hash the fields once.
        object.__setattr__(self, "_hash", hash((self.key, self.recurse, self.keys, self.separator, self.raw)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def of(cls, key: str, params: dict[str, str]) -> Shape:
        if "keys" in params:
            return cls(key, keys=True, separator=params.get("separator"))
        if "recurse" in params:
            return cls(key, recurse=True)
        return cls(key, raw="raw" in params)

    @property
    def path(self) -> str:
        return KV_PATH + self.key

    def params(self) -> dict[str, str]:
        """The query parameters that ask Consul for this shape (without index, wait and token)."""
        params: dict[str, str] = {}
        if self.keys:
            params["keys"] = ""
            if self.separator is not None:
                params["separator"] = self.separator
        elif self.recurse:
            params["recurse"] = ""
        elif self.raw:
            params["raw"] = ""
        return params


@dataclass(frozen=True)
class KVRead:
    """A downstream KV read the relay answers itself."""

    shape: Shape
    index: int  # 0: absent (answer at once)
    wait: float  # seconds, before jitter
    token: str  # "" when the request carries none (Consul then applies its anonymous or default token)


def _query_params(query: str) -> dict[str, str] | None:
    """The query's parameters, or None when one is repeated (ambiguous: Consul decides)."""
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:  # the common case, without percent-decoding (every watcher re-asks after every wake-up)
        pairs = [(name, value) for name, _, value in (part.partition("=") for part in query.split("&") if part)]
    params = dict(pairs)
    return params if len(params) == len(pairs) else None


@functools.lru_cache(maxsize=256)
def parse_duration(text: str) -> float | None:
    """Seconds of a Go duration (``55000ms``, ``10s``, ``1m30s``); a bare number is seconds (Consul's rule)."""
    if not text:
        return None
    if text.isdigit():
        return float(text)
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def request_token(params: dict[str, str], headers: dict[str, str]) -> str:
    """The ACL token of a request, in Consul's order: ``?token=``, ``X-Consul-Token``, ``Authorization: Bearer``."""
    if params.get("token"):
        return params["token"]
    if headers.get("x-consul-token"):
        return headers["x-consul-token"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def parse_kv_read(method: str, path: str, query: str, headers: dict[str, str]) -> KVRead | None:
    """The read the relay answers itself, or None when the request goes to Consul unchanged.

    ``headers`` have lower-case names. A malformed ``index`` or ``wait`` goes to Consul too, which answers it
    with its own 400.
    """
    if method != "GET" or not path.startswith(KV_PATH):
        return None
    params = _query_params(query)
    if params is None or not params.keys() <= _SERVED:
        return None
    index = 0
    if params.get("index"):
        if not params["index"].isdigit():
            return None
        index = int(params["index"])
    wait = DEFAULT_WAIT_SECONDS
    if params.get("wait"):
        parsed = parse_duration(params["wait"])
        if parsed is None:
            return None
        wait = parsed if parsed > 0 else DEFAULT_WAIT_SECONDS
    return KVRead(
        shape=Shape.of(path[len(KV_PATH) :], params),
        index=index,
        wait=min(wait, MAX_WAIT_SECONDS),
        token=request_token(params, headers),
    )


def answers_at_once(client_index: int, current_index: int) -> bool:
    """Consul's rule: no index (or 0) answers at once; otherwise only an index that moved above the client's."""
    return client_index < 1 or current_index > client_index


def timeout_with_jitter(wait: float, rng: Callable[[], float] = random.random) -> float:
    """How long a blocking query is held: ``wait`` plus Consul's random stagger of up to ``wait / 16``."""
    return wait + rng() * wait / JITTER_FRACTION


def readable_keys(shape: Shape, status: int, body: bytes) -> frozenset[str] | None:
    """The keys an answer of ``shape`` shows (the unit of Consul's ACL filter), or None if it cannot be read.

    404 shows none; a ``raw`` read shows its own key; a ``keys`` listing is a JSON list of names; every other
    read is a JSON list of entries with a ``Key``.
    """
    if status == 404:
        return frozenset()
    if status != 200:
        return None
    if shape.raw:
        return frozenset({shape.key})
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if not isinstance(decoded, list):
        return None
    if shape.keys:
        return frozenset(item for item in decoded if isinstance(item, str))
    return frozenset(item["Key"] for item in decoded if isinstance(item, dict) and isinstance(item.get("Key"), str))
