"""A config's rollout on its page, in a real headless Chromium against a real server and Consul: the section
(cohort, step i/n and percent, state, the H/C bar and counts, failures, the H → C diff), Pause/Resume, a two-step
Promote and a two-step Abort; a reader sees the section and no step, and a forged step is refused and audited.

Instance reports are written as the SDK writes them (``clients/<ns>/<instance>``), like the API's rollout tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from configd_core.consul import ConsulGateway
from configd_core.records import RolloutFailure, utcnow
from tests.api_support import report_rollout
from tests.browser.test_ui_browser import V1, V2, browser, playwright, push_versions, sign_in  # noqa: F401
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:  # noqa: F811
    ctx = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(30_000)  # a shared 2-core machine can be slow; a real failure still fails
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def _start(server: ServerProcess, ns: str, **plan: Any) -> dict[str, Any]:
    body = {"data": V2, "steps": [10, 50, 100], "bake_seconds": 3600, "message": "slower timeouts", **plan}
    with server.client("editor") as http:
        answer = http.post(f"/api/v1/configs/{ns}/service/rollouts", json=body)
    assert answer.status_code == 201, answer.text
    started: dict[str, Any] = answer.json()
    return started


def _current(server: ServerProcess, ns: str) -> dict[str, Any] | None:
    with server.client("reader") as http:
        answer = http.get(f"/api/v1/configs/{ns}/service/rollouts/current")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_rollout_section_pause_promote_and_a_two_step_abort(
    page: Page, server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    rid = _start(server, ns, cohort={"labels": {"region": "eu"}, "instances": ["web-1"]}, max_failures=3)["rollout"][
        "id"
    ]
    failure = RolloutFailure(instance="c", kind="callback", reason="ValueError: <bad> timeout", at=utcnow())
    report_rollout(gateway, server, ns, "a", rollout=rid, member=True, version=2)
    report_rollout(gateway, server, ns, "b", rollout=rid, member=False, version=1)
    report_rollout(gateway, server, ns, "c", rollout=rid, member=True, version=2, failures=[failure])
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service")

    section = page.locator("#rollout")
    expect(section).to_be_visible()
    expect(page.locator("#rollout-state")).to_have_text("running")
    expect(page.locator("#rollout-title")).to_contain_text("v1 (H) → v2 (C)")
    expect(page.locator("#rollout-step")).to_contain_text("1 of 3")
    expect(page.locator("#rollout-percent")).to_have_text("10%")
    expect(page.locator(".rollout-steps li[aria-current=step]")).to_have_text("10%")
    expect(page.locator("#rollout-cohort")).to_contain_text("region=eu")
    expect(page.locator("#rollout-cohort")).to_contain_text("web-1")
    expect(page.locator("#rollout-message")).to_have_text("slower timeouts")
    expect(page.locator("#rollout-on-c")).to_have_text("2")
    expect(page.locator("#rollout-on-h")).to_have_text("1")
    expect(page.locator("#rollout-counts")).to_contain_text("of 3 instances in the cohort")
    expect(page.locator("#rollout-bar .hc-c")).to_have_count(27)  # 2 of 3 instances, 40 cells
    expect(page.locator("#rollout-bar .hc-h")).to_have_count(13)
    expect(page.locator("#rollout-failures tbody tr")).to_have_count(1)
    expect(page.locator("#rollout-failures")).to_contain_text("ValueError: <bad> timeout")  # as text, escaped
    expect(page.locator("#rollout-paths li")).to_have_count(1)
    expect(page.locator("#rollout-paths")).to_contain_text("/timeout_ms")
    expect(page.locator("#rollout-diff td.code.add")).to_contain_text('"timeout_ms": 900')
    expect(page.locator("#rollout-diff td.code.del")).to_contain_text('"timeout_ms": 500')
    expect(page.locator("#history")).to_contain_text("rollout candidate")
    # Clients on C are the candidate's, not "outdated".
    expect(page.locator("table.list .pill", has_text="rollout candidate")).to_have_count(2)
    c_colour = page.locator("#rollout-bar .hc-c").first.evaluate("e => getComputedStyle(e).backgroundColor")
    h_colour = page.locator("#rollout-bar .hc-h").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert c_colour != h_colour

    # Pause and resume are one click each.
    page.click("#rollout-pause-button")
    expect(page).to_have_url(re.compile(r"\?rollout=paused$"))
    expect(page.locator("#flash")).to_contain_text("paused")
    expect(page.locator("#rollout-state")).to_have_text("paused")
    expect(page.locator("#rollout-next")).to_contain_text("resume to continue")
    page.click("#rollout-resume-button")
    expect(page.locator("#rollout-state")).to_have_text("running")

    # Promote: the panel opens first, the confirm button moves the rollout.
    confirm_promote = page.locator("#confirm-rollout-promote")
    expect(confirm_promote).to_be_hidden()
    page.click("#rollout-promote summary")
    expect(confirm_promote).to_be_visible()
    expect(page.locator("#rollout-promote-message")).to_be_focused()  # ui.js focuses the message field
    confirm_promote.click()
    expect(page).to_have_url(re.compile(r"\?rollout=promoted$"))
    expect(page.locator("#rollout-step")).to_contain_text("2 of 3")
    expect(page.locator("#rollout-percent")).to_have_text("50%")

    # Abort, in two steps: opening the panel changes nothing; only the confirm button aborts.
    confirm_abort = page.locator("#confirm-rollout-abort")
    expect(confirm_abort).to_be_hidden()
    page.click("#rollout-abort summary")
    expect(confirm_abort).to_be_visible()
    current = _current(server, ns)
    assert current is not None and current["rollout"]["state"] == "running"
    page.fill("#rollout-abort-message", "timeouts too slow")
    confirm_abort.click()
    expect(page).to_have_url(re.compile(rf"/ui/configs/{ns}/service\?rollout=aborted$"))
    expect(page.locator("#flash")).to_contain_text("aborted")
    expect(page.locator("#rollout")).to_have_count(0)
    expect(page.locator("#head-version")).to_have_text("head v1")
    history = page.locator("#rollout-history tbody tr")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("aborted")
    expect(history.first).to_contain_text("timeouts too slow")
    expect(history.first).to_contain_text("10% → 50% → 100%")

    assert _current(server, ns) is None
    with server.client("admin") as http:
        entries = http.get("/api/v1/audit", params={"namespace": ns}).json()["entries"]
    actions = [(e["action"], e["actor"]) for e in entries if e["action"].startswith("rollout.")]
    assert actions[:2] == [("rollout.abort", "editor"), ("rollout.promote", "editor")]


def test_reader_sees_the_rollout_but_no_step_and_a_forged_abort_is_refused(
    page: Page, context: BrowserContext, server: ServerProcess, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    _start(server, ns)
    sign_in(page, server, "reader")
    page.goto(f"/ui/configs/{ns}/service")
    expect(page.locator("#rollout-state")).to_have_text("running")
    expect(page.locator("#rollout-actions")).to_have_count(0)
    expect(page.locator("form[method=post]")).to_have_count(1)  # only sign-out

    csrf = page.locator("form[action='/ui/logout'] input[name=csrf]").input_value()
    answer = context.request.post(
        f"/ui/configs/{ns}/service/rollout/abort",
        form={"csrf": csrf, "message": "forged"},
        headers={"Origin": server.base_url},
    )
    assert answer.status == 403, answer.text()
    current = _current(server, ns)
    assert current is not None and current["rollout"]["state"] == "running"
    with server.client("admin") as http:
        entries = http.get("/api/v1/audit", params={"namespace": ns}).json()["entries"]
    assert entries[0]["action"] == "rollout.abort" and entries[0]["result"] == "rejected"
    assert entries[0]["actor"] == "reader" and entries[0]["status"] == 403


def test_a_change_request_that_starts_a_rollout(page: Page, server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    plan = {"steps": [10, 100], "bake_seconds": 600, "cohort": {"labels": {"region": "eu"}}}
    with server.client("editor") as http:
        proposed = http.post(
            "/api/v1/change-requests", json={"namespace": ns, "name": "service", "data": V2, "rollout": plan}
        )
    assert proposed.status_code == 201, proposed.text
    sign_in(page, server, "editor")
    page.goto(f"/ui/change-requests/{proposed.json()['id']}")
    expect(page.locator("#cr-target")).to_contain_text("starts a rollout: region=eu; steps 10%, 100%, 600 s each")
    page.click("#publish-button")
    expect(page.locator("#cr-state")).to_have_text("published")
    page.goto(f"/ui/configs/{ns}/service")
    expect(page.locator("#rollout")).to_contain_text("10%")
