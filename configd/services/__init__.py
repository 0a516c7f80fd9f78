"""Services over the Consul gateway: the only code of the server that talks to Consul.

- :mod:`.configs`: :class:`~.configs.ConfigStore` — reads, push, rollback, delete, dry-run, diff;
- :mod:`.schemas`: :class:`~.schemas.SchemaRegistry` — versioned JSON Schemas and their compiled validators;
- :mod:`.imports`: :class:`~.imports.BulkImporter` — many schemas and configs at once;
- :mod:`.audit`: :class:`~.audit.AuditLog` — appending rejections, listing entries;
- :mod:`.clients`: :class:`~.clients.ClientDirectory` — the SDK instances registered in a namespace;
- :mod:`.health`: :func:`~.health.consul_health` — does Consul answer, and has it a leader.

Each reads what it needs, asks :mod:`configd.planning` what to write (no I/O there), and commits in one
transaction. The HTTP layer (:mod:`configd.api`, :mod:`configd.ui`) calls these and never the gateway.
"""
