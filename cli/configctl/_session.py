"""What every command shares: the per-invocation Session (server, token, output) and argument helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from configd_core.documents import check_document
from configd_core.errors import InvalidConfig, InvalidName
from configd_core.layout import parse_ref

from ._errors import UsageError
from ._http import ConfigdAPI
from ._render import Output

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout instead of tables.")]
RefArg = Annotated[str, typer.Argument(metavar="NS/NAME", help="The config, as namespace/name.")]


@dataclass
class Session:
    """One invocation's connection settings and output mode; the API client is opened lazily."""

    server: str
    token: str | None
    output: Output = field(default_factory=Output)
    _api: ConfigdAPI | None = None

    def api(self, *, pool_size: int = 16) -> ConfigdAPI:
        if self._api is None:
            self._api = ConfigdAPI(self.server, self.token, pool_size=pool_size)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def session(ctx: typer.Context, as_json: bool) -> Session:
    """The invocation's Session, switched to JSON output when this command got ``--json``."""
    found = ctx.find_object(Session)
    if found is None:  # a command invoked without the root callback (never via the CLI itself)
        raise UsageError("configctl commands must run under the configctl app")
    if as_json:
        found.output.json_output = True
    return found


def split_ref(ref: str) -> tuple[str, str]:
    """``ns/name`` validated by the shared rules; a bad reference is a usage error (exit 2)."""
    try:
        return parse_ref(ref)
    except InvalidName as exc:
        raise UsageError(str(exc)) from exc


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_document(text: str, source: str, what: str = "config") -> Any:
    """Parse a JSON object as configd would store it; InvalidConfig (exit 1) says where it broke."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidConfig(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:
        raise InvalidConfig(f"{source}: {exc}") from exc
    try:
        check_document(value, what)
    except InvalidConfig as exc:
        raise InvalidConfig(f"{source}: {exc}") from exc
    return value


def read_document(path: str, what: str = "config") -> Any:
    """Read a JSON document from a file, or from stdin when ``path`` is ``-``."""
    if path == "-":
        return parse_document(sys.stdin.read(), "<stdin>", what)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    return parse_document(text, path, what)
