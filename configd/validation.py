"""JSON Schema (Draft 2020-12) checks: meta-validation of schemas and validation of configs. Pure, no I/O."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from configd_client._exceptions import ErrorDetail

MAX_REPORTED_ERRORS = 500


def _pointer(error: ValidationError) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path]
    return "/" + "/".join(parts) if parts else ""


def _details(errors: list[ValidationError]) -> list[ErrorDetail]:
    found = sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [ErrorDetail(_pointer(e) or "/", e.message) for e in found[:MAX_REPORTED_ERRORS]]


def schema_errors(schema: Any) -> list[ErrorDetail]:
    """Every way ``schema`` fails the Draft 2020-12 meta-schema (empty when it is a valid schema)."""
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    return _details(list(meta.iter_errors(schema)))


def compile_schema(schema: dict[str, Any]) -> Draft202012Validator:
    """A reusable validator with format checking; compile once per schema version."""
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def config_errors(validator: Draft202012Validator, data: Any) -> list[ErrorDetail]:
    """Every way ``data`` fails the compiled schema, each with its JSON Pointer path."""
    return _details(list(validator.iter_errors(data)))
