"""configd: the server of a dynamic configuration center on HashiCorp Consul.

Importing this package is cheap and pulls no web framework: the store, the HTTP API and the commands live in
submodules that import their dependencies (the ``server`` extra) when they are used.
"""

__version__ = "0.1.0"
