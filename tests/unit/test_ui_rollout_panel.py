"""The config page's rollout section without a server: the panel built from a RolloutRecord and a status, the H/C
bar, and the template's markup (escaping, the two-step forms, no steering for readers)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from configd.ui._present import (
    RolloutCounts,
    bar_cells,
    change_views,
    duration_text,
    rollout_panel,
    side_by_side,
)
from configd.ui.routes import _templates
from configd_core.diff import diff_json
from configd_core.records import RolloutFailure, RolloutPlan, RolloutRecord


def _record(**overrides: Any) -> RolloutRecord:
    values: dict[str, Any] = {
        "id": "r-1",
        "namespace": "payments",
        "name": "service",
        "base_version": 3,
        "candidate_version": 4,
        "candidate_sha256": "0" * 64,
        "candidate_size": 10,
        "plan": RolloutPlan.model_validate(
            {
                "cohort": {"labels": {"region": "eu", "x": "<script>"}, "instances": ["web-1"]},
                "steps": [5, 25, 100],
                "bake_seconds": 120,
                "max_failures": 2,
            }
        ),
        "step": 1,
        "started_by": "editor",
        "started_at": "2026-12-02T10:00:00Z",
        "step_started_at": "2026-12-02T10:00:00Z",
        "updated_by": "editor",
        "updated_at": "2026-12-02T10:00:00Z",
    }
    values.update(overrides)
    return RolloutRecord.model_validate(values)


FAILURE = RolloutFailure(instance="web-9", kind="rejected", reason="port <0>: too small", at="2026-12-02T10:00:05Z")
COUNTS = {"total": 10, "members": 8, "on_base": 6, "on_candidate": 2, "failed": 1}


def test_bar_cells_are_proportional_and_bounded() -> None:
    assert bar_cells(RolloutCounts(total=10, on_candidate=2, on_base=6), 10) == ["c"] * 2 + ["h"] * 6 + ["o"] * 2
    assert bar_cells(RolloutCounts(), 4) == ["o"] * 4
    assert bar_cells(RolloutCounts(total=3, on_candidate=3, on_base=3), 6) == ["c"] * 6
    assert len(bar_cells(RolloutCounts(total=7, on_candidate=3, on_base=4))) == 40


def test_counts_from_a_mapping_or_an_object() -> None:
    assert RolloutCounts.of(COUNTS) == RolloutCounts(10, 8, 6, 2, 1)
    assert RolloutCounts.of(SimpleNamespace(**COUNTS)) == RolloutCounts(10, 8, 6, 2, 1)
    assert RolloutCounts.of({"total": 3}) == RolloutCounts(total=3)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45, "45s"), (120, "2m"), (5400, "1h30m"), (86401, "1d1s")])
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_panel_of_a_running_rollout() -> None:
    panel = rollout_panel(
        _record(), percent=25.0, next_step_at="2026-12-02T10:02:00Z", instances=COUNTS, failures=[FAILURE]
    )
    assert (panel.step, panel.percent, panel.bake, panel.last_step) == (2, "25%", "2m", False)
    assert [(s.percent, s.state) for s in panel.steps] == [("5%", "done"), ("25%", "current"), ("100%", "todo")]
    assert panel.labels == [("region", "eu"), ("x", "<script>")] and panel.instances == ["web-1"]
    assert panel.threshold == "aborts at 2 failed instances"
    assert panel.failures == [FAILURE] and panel.counts.on_candidate == 2
    paused = rollout_panel(_record(state="paused", step=2), next_step_at="2026-12-02T10:02:00Z")
    assert paused.next_step_at is None and paused.last_step and paused.percent == "100%"
    assert paused.counts == RolloutCounts()


def _section(can_steer: bool, **record: Any) -> str:
    panel = rollout_panel(
        _record(**record), percent=25.0, next_step_at="2026-12-02T10:02:00Z", instances=COUNTS, failures=[FAILURE]
    )
    old, new = {"port": 80}, {"port": 8080}
    template = _templates.from_string(
        '{% from "_rollout.html" import rollout_section with context %}'
        "{{ rollout_section(r, 'payments', 'service', can_steer, changes, rows, 500) }}"
    )
    return template.render(
        r=panel,
        can_steer=can_steer,
        changes=change_views(diff_json(old, new)),
        rows=side_by_side('{\n  "port": 80\n}', '{\n  "port": 8080\n}'),
        me=SimpleNamespace(csrf="tok"),
    )


def test_section_for_an_editor_has_the_two_step_forms() -> None:
    html = _section(True)
    for needle in [
        'id="rollout-state">running<',
        "<strong>2 of 3</strong>",
        'id="rollout-percent">25%<',
        '<code class="label">region=eu</code>',
        "x=&lt;script&gt;",
        '<code class="instance">web-1</code>',
        'id="rollout-on-c">2<',
        'id="rollout-on-h">6<',
        "port &lt;0&gt;: too small",
        'action="/ui/configs/payments/service/rollout/promote"',
        "Promote to 100%…",
        'id="confirm-rollout-abort"',
        'action="/ui/configs/payments/service/rollout/pause"',
        'name="csrf" value="tok"',
        'id="rollout-paths"',
        'id="rollout-diff"',
    ]:
        assert needle in html, needle
    assert "<script>" not in html
    assert html.count('<span class="hc-') == 40
    # Both confirmations sit in closed <details>: one click opens, a second one confirms.
    assert html.count('<details class="danger-zone rollout-confirm"') == 2 and " open" not in html.split("<details")[1]


def test_section_variants() -> None:
    reader = _section(False)
    assert "rollout/promote" not in reader and "rollout/abort" not in reader and 'id="rollout-bar"' in reader
    last = _section(True, step=2)
    assert "Complete: make v4 the head…" in last
    paused = _section(True, state="paused")
    assert "rollout/resume" in paused and "rollout/pause" not in paused and "paused: resume to continue" in paused
