"""Decisions without I/O: what a write is, before anything touches Consul.

- :mod:`.audit`: audit records and the operation that writes one;
- :mod:`.writes`: the checked documents and records of one write, and the ONE builder of each transaction
  (push, schema registration, delete) that push, rollback and import all use;
- :mod:`.bulk`: the checks and plans of a bulk import, packed into Consul-sized transactions;
- :mod:`.validation`: JSON Schema (Draft 2020-12) meta-validation and config validation.

Nothing here imports the gateway's I/O or the HTTP layer; :mod:`configd.services` reads, asks these modules what
to write, then commits.
"""
