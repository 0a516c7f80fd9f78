"""Structured differences between two JSON documents, addressed by JSON Pointer (RFC 6901). Pure."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .documents import pretty_json

Op = Literal["add", "remove", "replace"]


@dataclass(frozen=True)
class Change:
    """One changed location: ``op`` at ``path`` from ``old`` to ``new`` (None where absent)."""

    op: Op
    path: str
    old: Any = None
    new: Any = None

    def as_tuple(self) -> tuple[str, Any, Any]:
        return (self.path, self.old, self.new)

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path, "old": self.old, "new": self.new}


def escape_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def json_pointer(parts: Iterable[object]) -> str:
    """The RFC 6901 pointer of a path of keys and indexes (``""`` for the whole document)."""
    return "".join(f"/{escape_token(str(part))}" for part in parts)


def _same(a: Any, b: Any) -> bool:
    # JSON distinguishes true from 1 and 1 from 1.0 only by type; Python's == does not.
    return type(a) is type(b) and a == b


def diff_json(old: Any, new: Any, path: str = "") -> list[Change]:
    """Every leaf-level change from ``old`` to ``new``; objects recurse, arrays compare by position."""
    changes: list[Change] = []
    stack: list[tuple[Any, Any, str]] = [(old, new, path)]
    while stack:
        a, b, here = stack.pop()
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), reverse=True):
                child = f"{here}/{escape_token(str(key))}"
                if key not in b:
                    changes.append(Change("remove", child, a[key], None))
                elif key not in a:
                    changes.append(Change("add", child, None, b[key]))
                else:
                    stack.append((a[key], b[key], child))
        elif isinstance(a, list) and isinstance(b, list):
            for i in range(max(len(a), len(b)) - 1, -1, -1):
                child = f"{here}/{i}"
                if i >= len(b):
                    changes.append(Change("remove", child, a[i], None))
                elif i >= len(a):
                    changes.append(Change("add", child, None, b[i]))
                else:
                    stack.append((a[i], b[i], child))
        elif not _same(a, b):
            changes.append(Change("replace", here, a, b))
    changes.sort(key=lambda c: _pointer_sort_key(c.path))
    return changes


def _pointer_sort_key(pointer: str) -> list[tuple[int, int | str]]:
    # isdigit() is also true for "²" and other digits int() refuses: array indexes are ASCII digits only.
    return [(0, int(t)) if t.isascii() and t.isdigit() else (1, t) for t in pointer.split("/")[1:]]


def unified_diff(old: Any, new: Any, *, from_label: str = "a", to_label: str = "b", context: int = 3) -> str:
    """Unified diff of the canonical pretty-printed JSON of two documents."""
    lines = difflib.unified_diff(
        pretty_json(old).splitlines(keepends=True) if old is not None else [],
        pretty_json(new).splitlines(keepends=True) if new is not None else [],
        fromfile=from_label,
        tofile=to_label,
        n=context,
    )
    return "".join(lines)
