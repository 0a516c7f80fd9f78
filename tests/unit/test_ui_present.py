"""Pure tests of the UI's presentation logic: JSON highlighting (escaping), side-by-side diff rows, CSRF, origins."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from configd.api.models import AppliedConfig, ClientView
from configd.ui._present import (
    DiffRow,
    change_views,
    client_counts,
    csrf_token,
    csrf_valid,
    format_time,
    highlight_json,
    pretty_for_display,
    safe_next,
    same_origin,
    side_by_side,
    time_ago,
)
from configd_core.diff import diff_json


def test_highlight_escapes_every_piece_of_text() -> None:
    text = json.dumps({"x<y": "<script>alert(1)</script>", "n": -1.5e3, "ok": True, "z": None}, indent=2)
    html = str(highlight_json(text))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<span class="j-key">&#34;x&lt;y&#34;</span>' in html
    assert '<span class="j-num">-1.5e3</span>' in html or '<span class="j-num">-1500.0</span>' in html
    assert '<span class="j-lit">true</span>' in html and '<span class="j-lit">null</span>' in html


def test_highlight_of_a_single_diff_line_and_of_quotes_and_ampersands() -> None:
    html = str(highlight_json('    "a\\"b": "x & \'y\'",'))
    assert html.startswith("    ") and "&amp;" in html and "&#39;" in html and "&#34;" in html
    assert '<span class="j-key">' in html and '<span class="j-str">' in html
    # Text that is not JSON at all still comes out escaped, never raw.
    assert str(highlight_json("<b>not json</b>")) == "&lt;b&gt;not json&lt;/b&gt;"


def _kinds(rows: list[DiffRow]) -> list[tuple[str, str]]:
    return [(r.left.kind, r.right.kind) for r in rows if not r.skipped]


def test_side_by_side_pairs_replaced_lines_and_pads_inserts_and_deletes() -> None:
    rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n")
    assert _kinds(rows) == [("same", "same"), ("del", "add"), ("same", "same"), ("empty", "add")]
    changed = [r for r in rows if r.changed]
    assert changed[0].left.text == "b" and changed[0].right.text == "B"
    assert changed[0].left.number == 2 and changed[0].right.number == 2
    assert changed[1].left.number is None and changed[1].right.text == "d" and changed[1].right.number == 4
    deleted = side_by_side("a\nb\n", "a\n")
    assert _kinds(deleted) == [("same", "same"), ("del", "empty")]


def test_side_by_side_folds_long_unchanged_runs_but_keeps_context() -> None:
    old = "\n".join(f"line {i}" for i in range(100))
    new = old.replace("line 50", "line fifty")
    rows = side_by_side(old, new, context=3)
    folds = [r for r in rows if r.skipped]
    assert [f.skipped for f in folds] == [47, 46]
    shown = [r.left.number for r in rows if not r.skipped]
    assert shown == [48, 49, 50, 51, 52, 53, 54]
    assert sum(f.skipped for f in folds) + len(shown) == 100
    # A short unchanged run between two changes is never folded.
    assert not any(r.skipped for r in side_by_side("a\nb\nc\nd\n", "A\nb\nc\nD\n", context=1))


def test_side_by_side_of_identical_texts_has_no_change() -> None:
    text, _ = pretty_for_display({"a": 1})
    rows = side_by_side(text, text)
    assert rows and not any(r.changed for r in rows)


def test_change_views_render_values_as_compact_json() -> None:
    changes = diff_json({"a": 1, "b": "x", "c": [1]}, {"a": 2, "c": [1, {"k": True}], "d": None})
    views = {v.path: v for v in change_views(changes)}
    assert (views["/a"].op, views["/a"].old, views["/a"].new) == ("replace", "1", "2")
    assert (views["/b"].op, views["/b"].old, views["/b"].new) == ("remove", '"x"', None)
    assert (views["/c/1"].op, views["/c/1"].old, views["/c/1"].new) == ("add", None, '{"k": true}')
    assert views["/d"].new == "null"
    long = change_views(diff_json({"a": ""}, {"a": "x" * 1000}))[0]
    assert long.new is not None and len(long.new) == 160 and long.new.endswith("…")


def test_client_counts_split_current_from_outdated() -> None:
    def client(instance: str, *configs: tuple[str, int, int | None]) -> ClientView:
        applied = [AppliedConfig(name=n, applied_version=a, head_version=h, current=a == h) for n, a, h in configs]
        return ClientView(
            instance=instance, application="app", host="h", pid=1, started_at="", updated_at="",
            current=all(c.current for c in applied), configs=applied,
        )  # fmt: skip

    clients = [client("1", ("svc", 3, 3), ("other", 1, 2)), client("2", ("svc", 2, 3)), client("3", ("gone", 1, None))]
    counts = client_counts(clients, ["svc", "other", "idle"])
    assert (counts["svc"].live, counts["svc"].outdated) == (1, 1)
    assert (counts["other"].live, counts["other"].outdated) == (0, 1)
    assert (counts["idle"].live, counts["idle"].outdated) == (0, 0)
    assert "gone" not in counts


def test_csrf_token_is_bound_to_the_secret_and_the_session() -> None:
    token = csrf_token(b"s" * 32, "session-a")
    assert csrf_valid(b"s" * 32, "session-a", token)
    assert not csrf_valid(b"s" * 32, "session-b", token)
    assert not csrf_valid(b"t" * 32, "session-a", token)
    assert not csrf_valid(b"s" * 32, "session-a", None)
    assert not csrf_valid(b"s" * 32, "session-a", "")
    assert "session-a" not in token and len(token) == 64


def test_same_origin_wants_our_origin_or_referer() -> None:
    host, scheme = "127.0.0.1:8080", "http"
    assert same_origin("http://127.0.0.1:8080", None, host, scheme)
    assert not same_origin("http://evil.example", None, host, scheme)
    assert not same_origin("null", "http://127.0.0.1:8080/ui/", host, scheme)
    assert not same_origin("https://127.0.0.1:8080", None, host, scheme)
    assert same_origin(None, "http://127.0.0.1:8080/ui/configs/a", host, scheme)
    assert not same_origin(None, "http://127.0.0.1:9999/ui/", host, scheme)
    assert not same_origin(None, None, host, scheme)
    assert not same_origin("http://127.0.0.1:8080", None, None, scheme)


def test_safe_next_never_leaves_the_ui() -> None:
    assert safe_next("/ui/configs/a?x=1") == "/ui/configs/a?x=1"
    for bad in ("https://evil.example/ui/", "//evil.example/ui/", "/api/v1/configs", "/ui\\@evil", None, ""):
        assert safe_next(bad) == "/ui/"


def test_times_are_shown_in_utc_and_relative() -> None:
    assert format_time("2024-05-01T12:03:04.123456Z") == "2024-05-01 12:03:04 UTC"
    assert format_time("not a time") == "not a time" and format_time(None) == ""
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert time_ago("2024-05-01T11:59:30Z", now) == "just now"
    assert time_ago("2024-05-01T11:55:00Z", now) == "5 min ago"
    assert time_ago("2024-05-01T09:00:00Z", now) == "3 h ago"
    assert time_ago("2024-04-30T12:00:00Z", now) == "1 day ago"
    assert time_ago("2024-04-20T12:00:00Z", now) == "11 days ago"
