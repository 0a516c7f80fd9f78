"""Bearer-token authentication and role/namespace authorization. Pure: no I/O besides loading the file.

Tokens file (``CONFIGD_TOKENS_FILE``), written by ``configd tokens add`` (:mod:`configd.tokens`)::

    {"tokens": [{"name": "ci", "sha256": "<hex of the token's sha256>", "role": "reader|editor|admin",
                 "namespaces": ["*"], "expires": "2027-06-30T00:00:00Z"}]}

``expires`` is optional. The old format, ``"token": "<the token itself>"`` instead of ``sha256``, is still read
(with a warning in the log). A file holds only hashes: a token is 256 random bits, so one sha256 is enough (a slow
password KDF protects guessable secrets, and would cost every request its time); see docs/security.md.

A reader reads; an editor also pushes and rolls back; an admin also manages schemas and deletes. ``namespaces``
holds shell-style globs (``payments``, ``team-*``, ``*``). The audit log records a token's ``name``, never the token.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from configd_core.errors import ConfigdError

from .errors import Forbidden, Unauthenticated

Role = Literal["reader", "editor", "admin"]
ROLE_RANK: dict[Role, int] = {"reader": 0, "editor": 1, "admin": 2}


log = logging.getLogger("configd")


def token_digest(token: str) -> str:
    """The hex sha256 a tokens file stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenSpec(BaseModel):
    """One entry of the tokens file: the token's sha256 (or, old format, the token itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    token: SecretStr | None = None
    role: Role
    namespaces: tuple[str, ...] = ("*",)
    expires: AwareDatetime | None = None

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("a token must be at least 8 characters")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> TokenSpec:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError(
                f"token {self.name!r}: give exactly one of 'sha256' (what `configd tokens add` writes) or 'token'"
            )
        return self

    @property
    def digest(self) -> bytes:
        if self.token is not None:
            return hashlib.sha256(self.token.get_secret_value().encode()).digest()
        assert self.sha256 is not None
        return bytes.fromhex(self.sha256)


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
        self._entries = tuple((s.digest, Principal(s.name, s.role, s.namespaces), s.expires) for s in specs)
        self.plain_text = tuple(s.name for s in specs if s.token is not None)

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
        book = cls(parsed.tokens)
        if book.plain_text:
            log.warning(
                "tokens file %s holds %d token(s) in plain text (%s); replace them with `configd tokens add`, "
                "which stores only their sha256",
                path,
                len(book.plain_text),
                ", ".join(book.plain_text),
            )
        return book

    def authenticate(self, presented: str | None, now: datetime | None = None) -> Principal:
        """The principal of a bearer token. Compares its sha256 against every entry in constant time, never stopping
        early; an expired token is refused with its expiry."""
        if not presented:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        candidate = hashlib.sha256(presented.encode()).digest()
        found: tuple[Principal, datetime | None] | None = None
        for digest, principal, expires in self._entries:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = (principal, expires)
        if found is None:
            raise Unauthenticated("unknown bearer token")
        principal, expires = found
        if expires is not None and (now or datetime.now(UTC)) >= expires:
            raise Unauthenticated(f"token {principal.name!r} expired at {expires.isoformat()}")
        return principal


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
