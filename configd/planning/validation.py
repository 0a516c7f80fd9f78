"""JSON Schema (Draft 2020-12) checks: meta-validation of schemas and validation of configs. Pure, no I/O.

configd never fetches a ``$ref``: jsonschema's default registry would retrieve remote URLs with urllib (a
server-side request to wherever a schema points, and a 500 when it fails). Validators get an empty registry,
so only references inside the schema (and the JSON Schema meta-schemas) resolve, and registration refuses a
schema with any other reference.

Patterns (``pattern``, ``patternProperties``, and format ``regex`` in a schema) are the ``regex`` engine's, under a
time limit: :mod:`configd.planning.patterns`.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import regex
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema_specifications import REGISTRY as SPECIFICATIONS  # type: ignore[import-untyped]
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from configd_core.diff import escape_token, json_pointer
from configd_core.errors import ErrorDetail, InvalidConfig
from configd_core.records import canonical_json

from .patterns import PatternTimeLimit, compiled, pattern_budget, pattern_keyword, pattern_properties_keyword

MAX_REPORTED_ERRORS = 500
# Keywords whose values are instance data, not subschemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_ROOT_URI = "urn:configd:schema"


def _regex_format(instance: object) -> bool:
    # A schema's patterns must compile with the engine that will run them (regex: \p{L} and friends work).
    return not isinstance(instance, str) or compiled(instance) is not None


FORMAT_CHECKER = FormatChecker()
FORMAT_CHECKER.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)
FORMAT_CHECKER.checks("regex", raises=regex.error)(_regex_format)

ConfigValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": pattern_keyword, "patternProperties": pattern_properties_keyword}
)
"""Draft 2020-12 with configd's pattern keywords (regex engine, time limit)."""


def _details(errors: list[ValidationError]) -> list[ErrorDetail]:
    found = sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [ErrorDetail(json_pointer(e.absolute_path) or "/", e.message) for e in found[:MAX_REPORTED_ERRORS]]


def schema_errors(schema: Any) -> list[ErrorDetail]:
    """Every way ``schema`` fails the Draft 2020-12 meta-schema (empty when it is a valid schema)."""
    # Meta-validation ($dynamicRef) costs ~5 ms per schema; imports register many identical schemas, so the
    # verdict is memoised by the schema's canonical JSON (a pure function of it).
    try:
        key = canonical_json(schema)
    except InvalidConfig:
        return _schema_errors(schema)
    return list(_schema_errors_by_text(key))


@functools.lru_cache(maxsize=1024)
def _schema_errors_by_text(text: bytes) -> tuple[ErrorDetail, ...]:
    return tuple(_schema_errors(json.loads(text)))


def _schema_errors(schema: Any) -> list[ErrorDetail]:
    # With the format checker, every `pattern` and `patternProperties` key must compile (format "regex"):
    # an invalid regex would otherwise be accepted here and raise re.error on every later push (a 500).
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=FORMAT_CHECKER)
    problems = _details(list(meta.iter_errors(schema)))
    if problems or not isinstance(schema, dict):
        return problems
    resolver = SPECIFICATIONS.with_resource(_ROOT_URI, DRAFT202012.create_resource(schema)).resolver(_ROOT_URI)
    return _unresolvable_refs(schema, resolver, "")[:MAX_REPORTED_ERRORS]


def _unresolvable_refs(node: Any, resolver: Any, path: str) -> list[ErrorDetail]:
    """References under ``node`` that ``resolver`` (a referencing.Resolver, entered into each $id) cannot follow."""
    found: list[ErrorDetail] = []
    if isinstance(node, list):
        for i, item in enumerate(node):
            found += _unresolvable_refs(item, resolver, f"{path}/{i}")
        return found
    if not isinstance(node, dict):
        return found
    if isinstance(node.get("$id"), str):
        resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
    for keyword in ("$ref", "$dynamicRef"):
        ref = node.get(keyword)
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                found.append(
                    ErrorDetail(
                        f"{path}/{keyword.replace('/', '~1')}",
                        f"{ref!r} cannot be resolved: configd only follows references inside the schema "
                        "(put the referenced schema under $defs); it never fetches remote URLs",
                    )
                )
    for key, value in node.items():
        if key not in _DATA_KEYWORDS:
            found += _unresolvable_refs(value, resolver, f"{path}/{escape_token(str(key))}")
    return found


def compile_schema(schema: dict[str, Any]) -> Draft202012Validator:
    """A reusable validator with format checking and no remote references; compile once per schema version."""
    validator: Draft202012Validator = ConfigValidator(schema, format_checker=FORMAT_CHECKER, registry=Registry())
    return validator


def config_errors(validator: Draft202012Validator, data: Any) -> list[ErrorDetail]:
    """Every way ``data`` fails the compiled schema, each with its JSON Pointer path.

    Patterns share a time budget (:data:`~configd.planning.patterns.PATTERN_TIME_LIMIT`): a pattern that exhausts
    it is an error at its path. A reference that cannot be resolved (only in a schema registered before references
    were checked) is reported as an error of the whole document, never raised.
    """
    try:
        with pattern_budget():
            return _details(list(validator.iter_errors(data)))
    except PatternTimeLimit as exc:  # a pattern matched by jsonschema's helpers, where no path is known
        return [ErrorDetail("/", str(exc))]
    except Unresolvable as exc:
        return [ErrorDetail("/", f"the schema has a reference configd cannot resolve ({exc}); register a fixed schema")]
    except re.error as exc:  # a pattern registered before patterns were checked
        return [ErrorDetail("/", f"the schema has an invalid regular expression ({exc}); register a fixed schema")]
