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


def test_the_write_answer_built_by_hand_is_the_write_result_model() -> None:
    """The push and rollback routes answer with ``WriteResult.body`` (no response-model pass): same keys, same
    order, same values as the model the OpenAPI document declares."""
    import json

    from configd.api.configs import _written
    from configd.api.models import ConfigSummary, WriteResult
    from configd_core.records import HeadRecord, SchemaRef

    head = HeadRecord(
        namespace="payments",
        name="service",
        version=7,
        sha256="ab" * 32,
        size=12,
        schema_ref=SchemaRef(namespace="payments", name="service", version=3),
        author="ci",
        message="why",
        created_at="2026-11-27T00:00:00.000000Z",
        data={"retries": 3},
    )
    model = WriteResult(status="created", namespace="payments", **ConfigSummary.of(head).model_dump())
    assert list(WriteResult.body("created", head)) == list(WriteResult.model_fields)
    assert WriteResult.body("created", head) == model.model_dump()
    response = _written("unchanged", head)
    assert response.status_code == 200
    assert json.loads(response.body) == {**model.model_dump(), "status": "unchanged"}
    assert _written("created", head).status_code == 201
