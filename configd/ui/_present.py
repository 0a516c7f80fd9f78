"""Decisions of the web UI that do no I/O: JSON highlighting, side-by-side diff rows, client counts, CSRF tokens,
the rollout panel.

Everything here returns plain data or :class:`markupsafe.Markup` built from escaped pieces, so the templates
never need ``|safe`` on anything a user wrote.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from markupsafe import Markup, escape

from configd_core.diff import Change
from configd_core.records import RolloutFailure, RolloutPlan, RolloutRecord

from ..api.models import ClientView

# Pretty JSON beyond this many characters is shown cut (an 8 MB config would make a page nobody can read).
MAX_RENDER_CHARS = 1_000_000
# Unchanged lines kept around each change in the side-by-side diff; longer unchanged runs fold into one row.
DIFF_CONTEXT = 4
# Longest rendering of one old/new value in the list of changed paths.
MAX_VALUE_CHARS = 160

_TOKEN_RE = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*")(?P<colon>\s*:)?
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<literal>\btrue\b|\bfalse\b|\bnull\b)
    | (?P<punct>[{}\[\],:])
    """,
    re.VERBOSE,
)


def highlight_json(text: str) -> Markup:
    """Wrap the tokens of (a fragment of) JSON text in ``<span class="j-…">``; every piece of text is escaped.

    Works line by line too (diff cells), since it never needs to see a token's closing bracket.
    """
    out: list[str] = []
    pos = 0
    for match in _TOKEN_RE.finditer(text):
        if match.start() > pos:
            out.append(str(escape(text[pos : match.start()])))
        kind = match.lastgroup
        if match.group("string") is not None:
            css = "j-key" if match.group("colon") else "j-str"
            out.append(f'<span class="{css}">{escape(match.group("string"))}</span>')
            if match.group("colon"):
                out.append(f'<span class="j-punct">{escape(match.group("colon"))}</span>')
        else:
            css = {"number": "j-num", "literal": "j-lit", "punct": "j-punct"}[kind or "punct"]
            out.append(f'<span class="{css}">{escape(match.group(0))}</span>')
        pos = match.end()
    if pos < len(text):
        out.append(str(escape(text[pos:])))
    return Markup("".join(out))


def pretty_for_display(value: Any) -> tuple[str, bool]:
    """Pretty JSON (sorted keys, two-space indent) and whether it had to be cut to ``MAX_RENDER_CHARS``."""
    text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    if len(text) <= MAX_RENDER_CHARS:
        return text, False
    return text[:MAX_RENDER_CHARS], True


def compact_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """One-line JSON of a changed value, cut with an ellipsis past ``limit`` characters."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


CellKind = Literal["same", "del", "add", "empty"]


@dataclass(frozen=True)
class DiffCell:
    number: int | None
    text: str
    kind: CellKind


@dataclass(frozen=True)
class DiffRow:
    """One row of a side-by-side diff; ``skipped`` > 0 marks a fold of that many unchanged lines."""

    left: DiffCell
    right: DiffCell
    skipped: int = 0

    @property
    def changed(self) -> bool:
        return self.left.kind != "same" or self.right.kind != "same"


_EMPTY = DiffCell(None, "", "empty")


def side_by_side(old_text: str, new_text: str, *, context: int = DIFF_CONTEXT) -> list[DiffRow]:
    """Rows pairing the lines of two texts: deleted lines on the left, added on the right, unchanged on both.

    Unchanged runs longer than ``2 * context`` lines are folded into one ``skipped`` row.
    """
    a = old_text.splitlines()
    b = new_text.splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    opcodes = matcher.get_opcodes()
    for index, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            rows.extend(_equal_rows(a, i1, j1, i2 - i1, context, first=index == 0, last=index == len(opcodes) - 1))
            continue
        left = [DiffCell(i + 1, a[i], "del") for i in range(i1, i2)]
        right = [DiffCell(j + 1, b[j], "add") for j in range(j1, j2)]
        for k in range(max(len(left), len(right))):
            rows.append(DiffRow(left[k] if k < len(left) else _EMPTY, right[k] if k < len(right) else _EMPTY))
    return rows


def _equal_rows(
    lines: list[str], i: int, j: int, count: int, context: int, *, first: bool, last: bool
) -> list[DiffRow]:
    def row(k: int) -> DiffRow:
        return DiffRow(DiffCell(i + k + 1, lines[i + k], "same"), DiffCell(j + k + 1, lines[i + k], "same"))

    head = 0 if first else context
    tail = 0 if last else context
    if count <= head + tail + 1:
        return [row(k) for k in range(count)]
    hidden = count - head - tail
    fold = DiffRow(DiffCell(None, "", "same"), DiffCell(None, "", "same"), skipped=hidden)
    return [row(k) for k in range(head)] + [fold] + [row(k) for k in range(count - tail, count)]


@dataclass(frozen=True)
class ChangeView:
    """A changed JSON path as the diff page lists it."""

    op: str
    path: str
    old: str | None
    new: str | None


def change_views(changes: Iterable[Change]) -> list[ChangeView]:
    return [
        ChangeView(
            op=c.op,
            path=c.path or "/",
            old=compact_value(c.old) if c.op != "add" else None,
            new=compact_value(c.new) if c.op != "remove" else None,
        )
        for c in changes
    ]


@dataclass(frozen=True)
class ClientCounts:
    """SDK instances that applied a config: at its head version (live) or at an older one (outdated)."""

    live: int = 0
    outdated: int = 0


def client_counts(clients: Iterable[ClientView], names: Iterable[str]) -> dict[str, ClientCounts]:
    """Per config name, how many registered clients applied its head version (live) or an older one (outdated)."""
    live: dict[str, int] = dict.fromkeys(names, 0)
    outdated: dict[str, int] = dict.fromkeys(live, 0)
    for client in clients:
        for applied in client.configs:
            if applied.name not in live:
                continue
            if applied.current:
                live[applied.name] += 1
            else:
                outdated[applied.name] += 1
    return {name: ClientCounts(live[name], outdated[name]) for name in live}


def parse_time(stamp: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(stamp: str | None) -> str:
    """``2024-05-01 12:03:04 UTC`` from a record's RFC 3339 timestamp (unparseable text comes back as it was)."""
    if not stamp:
        return ""
    parsed = parse_time(stamp)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else stamp


def time_ago(stamp: str | None, now: datetime | None = None) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``12 days ago``."""
    parsed = parse_time(stamp) if stamp else None
    if parsed is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - parsed).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    return f"{days} day{'s' if days != 1 else ''} ago"


def csrf_token(secret: bytes, session_token: str) -> str:
    """The anti-CSRF token of one signed-in session: an HMAC of its cookie token under the server's secret."""
    return hmac.new(secret, b"configd-ui-csrf\x00" + session_token.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, session_token: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(secret, session_token), presented or "")


def same_origin(origin: str | None, referer: str | None, host: str | None, scheme: str) -> bool:
    """Whether a POST comes from this server's own pages: its Origin (or, lacking one, its Referer) is ours.

    A request carrying neither is refused: every browser that can be tricked into a cross-site POST sends one.
    """
    if not host:
        return False
    expected = f"{scheme}://{host}".lower()
    if origin is not None:
        return origin.lower() == expected
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == expected
    return False


def safe_next(target: str | None, default: str = "/ui/") -> str:
    """A redirect target after sign-in: only a path of this UI, never another site (no open redirect)."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


# --- rollouts ---------------------------------------------------------------------------------------------
#: Cells of the H/C bar: each cell is one share of the instances (a class per cell, no inline style: the CSP).
ROLLOUT_BAR_CELLS = 40
BarCell = Literal["c", "h", "o"]


@dataclass(frozen=True)
class RolloutCounts:
    """Instances seen by a rollout: all of the config's, the cohort's members, on H (base), on C, failed."""

    total: int = 0
    members: int = 0
    on_base: int = 0
    on_candidate: int = 0
    failed: int = 0

    @classmethod
    def of(cls, value: Any) -> RolloutCounts:
        """From a status's ``instances`` (the API's JSON, or an object with the same fields)."""
        if isinstance(value, RolloutCounts):
            return value
        get = value.get if isinstance(value, Mapping) else (lambda key, default=0: getattr(value, key, default))
        return cls(*(int(get(key, 0) or 0) for key in ("total", "members", "on_base", "on_candidate", "failed")))


@dataclass(frozen=True)
class StepView:
    percent: str
    state: Literal["done", "current", "todo"]


@dataclass(frozen=True)
class RolloutPanel:
    """What the config page shows of its active rollout (every value plain: the template only lays it out)."""

    id: str
    state: str
    base_version: int
    candidate_version: int
    step: int  # 1-based
    steps: list[StepView]
    percent: str
    bake: str
    auto: bool
    labels: list[tuple[str, str]]
    instances: list[str]
    counts: RolloutCounts
    cells: list[BarCell]
    next_step_at: str | None
    threshold: str
    started_by: str
    started_at: str
    message: str
    failures: list[RolloutFailure]

    @property
    def last_step(self) -> bool:
        return self.step == len(self.steps)


def percent_text(value: float) -> str:
    return f"{value:g}%"


def duration_text(seconds: float) -> str:
    """``120`` → ``2m``, ``5400`` → ``1h30m`` (the forms ``configctl rollout start --bake`` reads)."""
    whole = round(seconds)
    if whole <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)


def bar_cells(counts: RolloutCounts, cells: int = ROLLOUT_BAR_CELLS) -> list[BarCell]:
    """The H/C bar: ``c`` cells for instances on the candidate, ``h`` on the base, ``o`` for the others (not in
    the cohort's share yet, or not reported); proportional to ``total``, rounded, never more than ``cells``."""
    if counts.total <= 0:
        return ["o"] * cells
    on_c = min(round(cells * counts.on_candidate / counts.total), cells)
    on_h = min(round(cells * counts.on_base / counts.total), cells - on_c)
    bar: list[BarCell] = ["c"] * on_c
    bar += ["h"] * on_h
    bar += ["o"] * (cells - on_c - on_h)
    return bar


def failure_threshold(plan: RolloutPlan) -> str:
    limits = []
    if plan.max_failures is not None:
        limits.append(f"{plan.max_failures} failed instance{'s' if plan.max_failures != 1 else ''}")
    if plan.max_failure_ratio is not None:
        limits.append(f"{plan.max_failure_ratio * 100:g}% of the cohort failed")
    return "aborts at " + " or ".join(limits) if limits else "the first failed instance aborts it"


def rollout_panel(
    rollout: RolloutRecord,
    *,
    percent: float | None = None,
    next_step_at: str | None = None,
    instances: Any = None,
    failures: Iterable[RolloutFailure] | None = None,
) -> RolloutPanel:
    """The panel of one rollout from its record and the status the service computed around it."""
    plan = rollout.plan
    current = min(rollout.step, len(plan.steps) - 1)
    finished = not rollout.active
    steps = [
        StepView(
            percent_text(step),
            "done" if index < current or finished else ("current" if index == current else "todo"),
        )
        for index, step in enumerate(plan.steps)
    ]
    counts = RolloutCounts.of(instances) if instances is not None else RolloutCounts()
    return RolloutPanel(
        id=rollout.id,
        state=rollout.state,
        base_version=rollout.base_version,
        candidate_version=rollout.candidate_version,
        step=current + 1,
        steps=steps,
        percent=percent_text(rollout.percent if percent is None else percent),
        bake=duration_text(plan.bake_seconds),
        auto=plan.auto,
        labels=sorted(plan.cohort.labels.items()),
        instances=list(plan.cohort.instances),
        counts=counts,
        cells=bar_cells(counts),
        next_step_at=next_step_at if rollout.state == "running" else None,
        threshold=failure_threshold(plan),
        started_by=rollout.started_by,
        started_at=rollout.started_at,
        message=rollout.message,
        failures=list(failures if failures is not None else rollout.failures),
    )
