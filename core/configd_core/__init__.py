"""configd_core: the facts and the Consul boundary that the server, the SDK and the CLI share.

Every module here is public and imported by its own name; nothing in it knows about HTTP, the SDK's threads or
the CLI. Its surface:

============================  ===================================================================================
``configd_core.layout``       every Consul key (``KeyLayout``), every limit configd designs around, name rules
``configd_core.records``      the pydantic record models stored in Consul, chunking (re-exports ``documents``)
``configd_core.documents``    JSON documents, no pydantic: storable checks, canonical JSON, sha256, pretty form
``configd_core.diff``         JSON Pointer (RFC 6901) building, structural diff, unified text diff
``configd_core.errors``       the one exception tree (``ConfigdError`` and its subclasses)
``configd_core.consul``       ``ConsulGateway`` (py-consul on urllib3) and the transaction operations ``op_*``
``configd_core.blocking``     Consul's blocking-query rules: index reset, jitter, backoff, rate limit (no I/O)
``configd_core.flags``        feature flags as config values: the key ``NS/NAME/PATH``, JSON Pointer resolution
``configd_core.rollouts``     rollout membership: sticky buckets, labels, the one ``is_member`` rule
============================  ===================================================================================

The dependency rule: ``configd_core`` imports nothing of ``configd``, ``configd_client`` or ``configctl``; they all
import it. docs/architecture.md draws the whole picture.
"""

__all__ = ["blocking", "consul", "diff", "documents", "errors", "flags", "layout", "records", "rollouts"]
