"""Feature flags are values in configs: the flag key ``NS/NAME/PATH`` and how a flag resolves. Pure.

A flag is one value of one config: ``payments/service/features/new_checkout`` is the JSON Pointer
``/features/new_checkout`` of the config ``payments/service`` (PATH is the pointer without its leading slash, so a
key with no PATH, ``payments/service``, is the whole document). Used alike by the SDK's OpenFeature provider
(``configd_client.openfeature``) and the server's OFREP endpoints (``configd.api.ofrep``), so both read a key the
same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .diff import escape_token
from .errors import InvalidName
from .layout import validate_name

FlagType = Literal["boolean", "string", "integer", "float", "object"]


class FlagNotFound(LookupError):
    """The flag key names no value: its config or its path does not exist."""


class FlagTypeMismatch(TypeError):
    """The flag's value is not of the type asked for."""


@dataclass(frozen=True)
class FlagKey:
    """A parsed flag key: the config it lives in and the JSON Pointer of its value there."""

    namespace: str
    name: str
    pointer: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.ref}{self.pointer}"


def parse_flag_key(key: str) -> FlagKey:
    """``NS/NAME[/PATH]`` → FlagKey; InvalidName when NS or NAME is not a configd name."""
    parts = key.split("/", 2)
    if len(parts) < 2:
        raise InvalidName(f"flag key {key!r} must be 'namespace/name/path' (path: a JSON Pointer without its '/')")
    namespace = validate_name(parts[0], "namespace")
    name = validate_name(parts[1], "name")
    return FlagKey(namespace, name, "/" + parts[2] if len(parts) == 3 else "")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value at RFC 6901 ``pointer`` in ``document``; FlagNotFound when there is none."""
    if pointer == "":
        return document
    node = document
    for raw in pointer[1:].split("/"):
        token = _unescape(raw)
        if isinstance(node, dict):
            if token not in node:
                raise FlagNotFound(f"no value at {pointer}")
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or (token != "0" and token.startswith("0")) or int(token) >= len(node):
                raise FlagNotFound(f"no value at {pointer}")
            node = node[int(token)]
        else:
            raise FlagNotFound(f"no value at {pointer}")
    return node


def typed_value(value: Any, flag_type: FlagType) -> Any:
    """``value`` as a flag of ``flag_type`` (an integer is also a float); FlagTypeMismatch otherwise.

    JSON has one number type, but configd keeps what was pushed: ``5`` is an integer, ``5.0`` a float.
    """
    if flag_type == "boolean" and isinstance(value, bool):
        return value
    if flag_type == "string" and isinstance(value, str):
        return value
    if flag_type == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if flag_type == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if flag_type == "object" and isinstance(value, dict | list):
        return value
    raise FlagTypeMismatch(f"the value is {json_type(value)}, not {flag_type}")


def json_type(value: Any) -> str:
    """The JSON type name of a value (``integer`` and ``float`` told apart)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def flag_leaves(document: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """``(pointer, value)`` of every flag a document holds for a bulk evaluation: each value that is not an
    object (scalars and arrays), objects walked in key order."""
    if isinstance(document, dict):
        for key in sorted(document):
            yield from flag_leaves(document[key], f"{pointer}/{escape_token(key)}")
    elif pointer:
        yield pointer, document


def changed_flag_keys(ref: str, paths: list[str]) -> list[str]:
    """The flag keys a change touches: each changed pointer and every object above it, the whole document
    (``ref``) included (an object flag changes when any value inside it does), sorted."""
    keys: set[str] = {ref} if paths else set()
    for path in paths:
        parts = path.split("/")
        for end in range(2, len(parts) + 1):
            keys.add(ref + "/".join(parts[:end]))
    return sorted(keys)
