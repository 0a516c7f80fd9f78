"""Human and machine output: rich tables and coloured diffs on stdout, one-line errors on stderr, plain JSON.

rich is imported when a command first prints through it (``--json`` and ``get`` never do): start-up time is
what ``configctl --help`` and a one-shot ``get`` pay for every import (docs/benchmarks.md, start-up).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from configd_core.documents import pretty_json

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.text import Text

_DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))
_OP_MARKS = {"add": ("+", "green"), "remove": ("-", "red"), "replace": ("~", "yellow")}


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def json_report_text(report: dict[str, Any]) -> str:
    """A JSON object whose list values hold one compact element per line: still readable, and written by the C
    encoder (indenting is pure Python: ~3 s and 66 MB for the report of a 20,000-document import)."""
    fields: list[str] = []
    for key, value in report.items():
        name = json.dumps(key, ensure_ascii=False)
        if isinstance(value, list) and value:
            elements = ",\n".join(f"    {json.dumps(e, ensure_ascii=False)}" for e in value)
            fields.append(f"  {name}: [\n{elements}\n  ]")
        else:
            fields.append(f"  {name}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(fields) + "\n}"


def when(timestamp: Any) -> str:
    """``2026-01-02T03:04:05.123456Z`` as ``2026-01-02 03:04:05Z`` (tables; --json keeps the full value)."""
    if not isinstance(timestamp, str) or "T" not in timestamp:
        return "" if timestamp is None else str(timestamp)
    day, _, clock = timestamp.partition("T")
    return f"{day} {clock.split('.')[0].rstrip('Z')}Z"


def short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Output:
    """Where a command writes: rich consoles for people, ``emit_json`` for ``--json``."""

    def __init__(self, *, json_output: bool = False) -> None:
        self.json_output = json_output

    # No explicit file: rich resolves sys.stdout/sys.stderr when printing, which CliRunner swaps.
    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json_text(value) + "\n")
        sys.stdout.flush()

    def emit_json_report(self, report: dict[str, Any]) -> None:
        """A large ``--json`` report: one list element per line (see :func:`json_report_text`)."""
        sys.stdout.write(json_report_text(report) + "\n")
        sys.stdout.flush()

    def emit_json_line(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def emit_document(self, value: Any) -> None:
        """A config or schema document, pipeable (canonical pretty JSON, no colour)."""
        sys.stdout.write(pretty_json(value).rstrip("\n") + "\n")
        sys.stdout.flush()

    def line(self, text: str | Text, *, style: str | None = None) -> None:
        self.out.print(text, style=style, markup=False)

    def note(self, text: str) -> None:
        """Progress and status chatter: stderr, so stdout stays pipeable."""
        self.err.print(text, style="dim", markup=False)

    def error(self, text: str) -> None:
        from rich.text import Text

        self.err.print(Text(text, style="bold red"))

    def diff(self, unified: str) -> None:
        from rich.text import Text

        for raw in unified.splitlines():
            style = next((s for prefix, s in _DIFF_STYLES if raw.startswith(prefix)), None)
            self.out.print(Text(raw, style=style or ""))

    def changes(self, changes: Sequence[dict[str, Any]]) -> None:
        if not changes:
            self.line("no changes", style="dim")
            return
        from rich.text import Text

        self.line(f"{len(changes)} changed path(s):", style="bold")
        for change in changes:
            mark, style = _OP_MARKS.get(str(change.get("op")), ("?", ""))
            if change.get("op") == "add":
                detail = short(change.get("new"))
            elif change.get("op") == "remove":
                detail = short(change.get("old"))
            else:
                detail = f"{short(change.get('old'))} → {short(change.get('new'))}"
            self.out.print(Text(f"  {mark} {change.get('path') or '/'}: {detail}", style=style))

    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A table whose last column (a message) wraps; the others never do."""
        from rich.table import Table

        table = Table(title=title, title_justify="left", header_style="bold")
        for index, column in enumerate(columns):
            last = index == len(columns) - 1
            table.add_column(column, overflow="fold", no_wrap=not last, ratio=1 if last else None)
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        self.out.print(table)

    def progress(self, *, transient: bool = False) -> Progress:
        """A progress bar on stderr; silent in ``--json`` mode."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            disable=self.json_output,
            transient=transient,
        )
