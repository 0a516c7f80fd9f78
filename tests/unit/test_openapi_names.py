"""Every namespace/name parameter of the HTTP API states the name rule in the OpenAPI document (the shared
FastAPI aliases of configd/api/deps.py), so fuzzers and generated clients know which names exist."""

from __future__ import annotations

from configd.app import create_app
from configd.settings import ServerSettings
from configd_core.layout import NAME_PATTERN


def test_every_name_parameter_carries_the_name_rule() -> None:
    document = create_app(ServerSettings()).openapi()
    seen = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in ("ns", "name", "namespace", "after"):
                    seen += 1
                    assert NAME_PATTERN in parameter["schema"].get("pattern", ""), (method, path, parameter["name"])
    assert seen > 20
