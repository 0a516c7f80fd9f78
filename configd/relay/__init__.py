"""``configd relay``: a Consul-compatible watch relay, so that 10,000+ watching processes cost Consul one query.

Applications point ``CONSUL_HTTP_ADDR`` at a relay instead of at Consul. The relay answers the KV reads that
watchers make (blocking ``GET /v1/kv/<prefix>?recurse&index=&wait=``, plain key reads of watched keys) from
memory, holding ONE upstream blocking query per distinct watched read, and forwards everything else (sessions,
writes, transactions, status, reads it does not watch) to Consul unchanged with the caller's token. It keeps
no state that matters: relays can run side by side, and a client of a relay that dies reconnects to another.

Modules: :mod:`._reads` (which requests it answers; Consul's rules), :mod:`._book` (waiters, snapshots, ACL
verdicts; no I/O), :mod:`._server` (the asyncio server and upstream queries). docs/relay.md is the guide.
"""

from ._book import ACL_VERDICT_SECONDS, LINGER_SECONDS
from ._server import Relay, raise_open_files_limit, run, serve

__all__ = ["ACL_VERDICT_SECONDS", "LINGER_SECONDS", "Relay", "raise_open_files_limit", "run", "serve"]
