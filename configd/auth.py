"""Bearer-token authentication and role/namespace authorization. Pure: no I/O besides loading the file.

Tokens file (``CONFIGD_TOKENS_FILE``)::

    {"tokens": [{"name": "ci", "token": "…", "role": "reader|editor|admin", "namespaces": ["*"]}]}

A reader reads; an editor also pushes and rolls back; an admin also manages schemas and deletes. ``namespaces``
holds shell-style globs (``payments``, ``team-*``, ``*``). The audit log records a token's ``name``, never the token.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from configd_core.errors import ConfigdError

from .errors import Forbidden, Unauthenticated

Role = Literal["reader", "editor", "admin"]
ROLE_RANK: dict[Role, int] = {"reader": 0, "editor": 1, "admin": 2}


class TokenSpec(BaseModel):
    """One entry of the tokens file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    token: SecretStr
    role: Role
    namespaces: tuple[str, ...] = ("*",)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 8:
            raise ValueError("a token must be at least 8 characters")
        return value


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenSpec, ...] = ()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (the audit's author), its role and its namespace globs."""

    name: str
    role: Role
    namespaces: tuple[str, ...]

    def covers(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)

    def authorize(self, role: Role, namespace: str | None) -> None:
        """Raise Forbidden unless this principal holds ``role`` (or higher) in ``namespace``."""
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            raise Forbidden(f"token {self.name!r} has role {self.role}; this request needs {role}")
        if namespace is not None and not self.covers(namespace):
            raise Forbidden(f"token {self.name!r} may not access namespace {namespace!r}")


class TokenBook:
    """The known tokens. Immutable: reloading builds a new book and swaps the reference."""

    def __init__(self, specs: tuple[TokenSpec, ...] = ()) -> None:
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigdError(f"tokens file: duplicate token names {duplicates}")
        self._entries = tuple(
            (s.token.get_secret_value().encode(), Principal(s.name, s.role, s.namespaces)) for s in specs
        )

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_file(cls, path: Path) -> TokenBook:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigdError(f"cannot read tokens file {path}: {exc}") from exc
        try:
            parsed = TokensFile.model_validate(raw)
        except ValidationError as exc:
            # pydantic never echoes a SecretStr's value, so the message is safe to show.
            raise ConfigdError(f"invalid tokens file {path}: {exc}") from exc
        return cls(parsed.tokens)

    def authenticate(self, presented: str | None) -> Principal:
        """The principal of a bearer token. Compares against every token in constant time, never stopping early."""
        if not presented:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        candidate = presented.encode()
        found: Principal | None = None
        for secret, principal in self._entries:
            if hmac.compare_digest(candidate, secret) and found is None:
                found = principal
        if found is None:
            raise Unauthenticated("unknown bearer token")
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
