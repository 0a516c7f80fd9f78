"""The tokens file on disk: reloaded when it changes, and ``configd tokens add|list|remove``.

:class:`TokenFile` keeps the :class:`~configd.auth.TokenBook` of a file and looks at the file's identity (inode,
mtime, size; one ``stat``, about a microsecond) before each authentication. When it changed, a new book is built
and the reference swapped: a request authenticates against one book, whole, and in-flight requests finish under
the book they started with. A file that fails to load never replaces a good book (the error is logged once per
change), so a half-written or broken edit cannot lock everyone out.

``configd tokens add`` generates a token (256 random bits), writes only its sha256 (atomically: a temporary file
in the same directory, then ``os.replace``, so a reloading server never reads half a file) and prints the token
once. Losing it means adding a new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from configd_core.errors import ConfigdError

from .auth import ROLE_RANK, Principal, TokenBook, TokenSpec, token_digest

log = logging.getLogger("configd")

TOKEN_PREFIX = "cfd_"  # makes a leaked token recognisable to secret scanners
_DURATION = re.compile(r"^(\d+)([dhm])$")


class TokenFile:
    """The tokens of one file, reloaded when the file changes (swap, never mutate)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._identity = self._stat()
        self._book = TokenBook.from_file(path)  # a broken file at start is an error, not an empty book

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @property
    def book(self) -> TokenBook:
        """The current book, reloaded first if the file changed since it was read."""
        identity = self._stat()
        if identity != self._identity:
            with self._lock:
                if identity != self._identity:
                    self._reload(identity)
        return self._book

    def _reload(self, identity: tuple[int, int, int] | None) -> None:
        self._identity = identity  # once per change: a broken file is reported once, retried on the next change
        try:
            book = TokenBook.from_file(self.path)
        except ConfigdError as exc:
            log.error("tokens file changed but cannot be used; keeping the %d tokens read before: %s", len(self), exc)
            return
        self._book = book
        log.info("tokens file %s reloaded: %d tokens", self.path, len(book))

    def __len__(self) -> int:
        return len(self._book)

    def authenticate(self, presented: str | None) -> Principal:
        return self.book.authenticate(presented)


# --- configd tokens add | list | remove ---------------------------------------------------------------------
def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``90d`` / ``12h`` / ``30m`` from now, or an ISO 8601 date-time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now + timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigdError(f"--expires {text!r}: give a duration (90d, 12h, 30m) or an ISO 8601 date-time") from exc
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise ConfigdError(f"--expires {text!r} is in the past")
    return moment


def _read_entries(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    TokenBook.from_file(path)  # refuse to extend a file the server could not read
    raw = json.loads(path.read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = list(raw.get("tokens", []))
    return entries


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    text = json.dumps({"tokens": entries}, indent=2) + "\n"
    TokenBook(tuple(TokenSpec.model_validate(e) for e in entries))  # the new file must load before it replaces the old
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_token(path: Path, name: str, role: str, namespaces: list[str], expires: datetime | None = None) -> str:
    """Add a token named ``name`` to the file; returns the token (the file keeps only its sha256)."""
    if role not in ROLE_RANK:
        raise ConfigdError(f"--role {role!r}: one of {', '.join(ROLE_RANK)}")
    if not namespaces or any(not n.strip() for n in namespaces):
        raise ConfigdError("--namespaces: one or more namespace globs (payments, team-*, *)")
    entries = _read_entries(path)
    if any(e.get("name") == name for e in entries):
        raise ConfigdError(f"a token named {name!r} is already in {path}; remove it first (configd tokens remove)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"name": name, "sha256": token_digest(token), "role": role, "namespaces": namespaces}
    if expires is not None:
        entry["expires"] = expires.astimezone(UTC).isoformat().replace("+00:00", "Z")
    _write_entries(path, [*entries, entry])
    return token


def remove_token(path: Path, name: str) -> None:
    entries = _read_entries(path)
    kept = [e for e in entries if e.get("name") != name]
    if len(kept) == len(entries):
        raise ConfigdError(f"no token named {name!r} in {path}")
    _write_entries(path, kept)


def list_tokens(path: Path) -> list[dict[str, Any]]:
    """Every entry without its secret: name, role, namespaces, expiry and whether it is stored in plain text."""
    return [
        {
            "name": e.get("name"),
            "role": e.get("role"),
            "namespaces": e.get("namespaces", ["*"]),
            "expires": e.get("expires"),
            "stored": "plain text" if "token" in e else "sha256",
        }
        for e in _read_entries(path)
    ]


def run_tokens_command(args: Any) -> int:
    """``configd tokens …`` (argparse namespace from configd.__main__)."""
    raw_path = args.tokens_file or os.environ.get("CONFIGD_TOKENS_FILE")
    if not raw_path:
        print("configd tokens: give --tokens-file or set CONFIGD_TOKENS_FILE", file=sys.stderr)
        return 2
    path = Path(raw_path)
    if args.tokens_command == "add":
        namespaces = [n.strip() for group in args.namespaces for n in group.split(",") if n.strip()]
        expires = parse_expiry(args.expires) if args.expires else None
        token = add_token(path, args.name, args.role, namespaces, expires)
        print(
            f"added token {args.name!r} ({args.role} on {', '.join(namespaces)}"
            f"{', expires ' + expires.isoformat() if expires else ''}) to {path}; "
            "this is the only time it is shown:",
            file=sys.stderr,
        )
        print(token)
    elif args.tokens_command == "remove":
        remove_token(path, args.name)
        print(f"removed token {args.name!r} from {path}", file=sys.stderr)
    else:
        for entry in list_tokens(path):
            print(
                f"{entry['name']}\t{entry['role']}\t{','.join(entry['namespaces'])}\t"
                f"{entry['expires'] or 'never expires'}\t{entry['stored']}"
            )
    return 0
