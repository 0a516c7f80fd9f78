"""Work that needs no server: offline validation and JSON Schemas generated from pydantic settings classes.

pydantic and jsonschema (through the server's validation module) are imported by the function that uses them:
every command module imports this one, and most commands never validate offline.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

from configd_core.errors import ErrorDetail, ValidationFailed

from ._errors import UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def check_schema(schema: Any, source: str) -> None:
    """Raise ValidationFailed unless ``schema`` is a valid Draft 2020-12 schema (the server's own check)."""
    from configd.planning.validation import schema_errors

    problems = schema_errors(schema)
    if problems:
        raise ValidationFailed(f"{source}: not a valid JSON Schema (Draft 2020-12)", problems)


def validate_offline(schema: Any, data: Any, source: str) -> list[ErrorDetail]:
    """Every error of ``data`` against ``schema``, with the same paths and messages the server reports."""
    from configd.planning.validation import compile_schema, config_errors

    check_schema(schema, source)
    return config_errors(compile_schema(schema), data)


def load_model(spec: str) -> type[BaseModel]:
    """Import ``package.module:Class`` (the current directory is importable, as for uvicorn) and check it."""
    from pydantic import BaseModel

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--from-model {spec!r}: use package.module:Class")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--from-model {spec!r}: cannot import {module_name}: {exc}") from exc
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise UsageError(f"--from-model {spec!r}: {module_name} has no attribute {attr!r}")
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise UsageError(f"--from-model {spec!r}: {attr} is not a pydantic model (or BaseSettings) class")
    return found


def schema_from_model(model: type[BaseModel]) -> dict[str, Any]:
    """The Draft 2020-12 JSON Schema of what ``model`` accepts (validation mode, by alias).

    pydantic already emits 2020-12 (``$defs``/``$ref``) and mirrors the model's ``extra`` setting:
    ``forbid`` (pydantic-settings' default) becomes ``"additionalProperties": false`` on that object, ``ignore``
    leaves extra keys allowed, as the model itself would. Defaults that have no JSON form are left out of
    the schema (they are documentation only), instead of failing.
    """
    from pydantic.json_schema import PydanticJsonSchemaWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        generated = model.model_json_schema(mode="validation", by_alias=True)
    schema: dict[str, Any] = {"$schema": DRAFT_2020_12, **generated}
    schema.setdefault("type", "object")
    check_schema(schema, f"{model.__module__}.{model.__qualname__}")
    return schema
