"""Editing in the browser and change requests, in a real headless Chromium against a real server and Consul.

An editor edits a config in CodeMirror, publishes with a schema error first (shown at its path, in the list and in
the editor), fixes it in the page and publishes; a head that moved while editing is shown as a three-way picture,
never overwritten; a proposal is approved by a second user and published; a moved head marks a request
conflicted; and the whole edit works with the keyboard only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from configd_core.consul import ConsulGateway
from configd_core.records import AuditRecord
from tests.browser.test_ui_browser import V1, browser, playwright, push_versions, sign_in  # noqa: F401
from tests.conftest import ServerProcess, kv_tree

CR = "/api/v1/change-requests"

pytestmark = pytest.mark.timeout(180)


def _context(browser: Browser, server: ServerProcess) -> BrowserContext:  # noqa: F811
    ctx = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(30_000)  # a shared 2-core machine can be slow; a real failure still fails
    return ctx


@pytest.fixture
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:  # noqa: F811
    ctx = _context(browser, server)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


@pytest.fixture
def second(browser: Browser, server: ServerProcess) -> Iterator[Page]:  # noqa: F811
    """A second browser (its own cookies): the reviewer."""
    ctx = _context(browser, server)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def _head(server: ServerProcess, ns: str) -> dict[str, Any]:
    with server.client("reader") as http:
        body: dict[str, Any] = http.get(f"/api/v1/configs/{ns}/service").json()
    return body


def _set_document(page: Page, data: dict[str, Any] | str) -> None:
    """Replace the editor's text, as a user would (select all, then type)."""
    text = data if isinstance(data, str) else json.dumps(data)  # one line: the browser inserts it as typed text
    page.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def test_edit_publish_with_an_error_fixed_in_the_page(page: Page, server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service")
    page.click("#edit-config")
    expect(page.locator(".cm-editor .cm-lineNumbers")).to_be_visible()  # a real editor: line numbers, folding
    expect(page.locator(".cm-foldGutter")).to_be_visible()
    assert page.locator(".cm-gutters").evaluate("e => getComputedStyle(e).display") == "flex"  # its theme applied
    expect(page.locator(".cm-content")).to_contain_text('"timeout_ms": 500')

    _set_document(page, {**V1, "timeout_ms": -5})
    page.fill("#message", "faster")
    page.click("#publish")
    expect(page.locator("#notice")).to_contain_text("fix the errors")
    expect(page.locator("#schema-errors li")).to_have_count(1)
    expect(page.locator("#schema-errors li")).to_contain_text("/timeout_ms")
    # The same error is marked in the editor at its path (a lint range on the value).
    expect(page.locator(".cm-lintRange-error")).to_have_count(1)
    expect(page.locator(".cm-lintRange-error")).to_have_text("-5")
    assert _head(server, ns)["version"] == 1  # nothing was written

    _set_document(page, {**V1, "timeout_ms": 750})
    page.click("#check")
    expect(page.locator("#validation-status")).to_contain_text("Valid against schema v1")
    expect(page.locator("#edit-paths li")).to_contain_text("/timeout_ms")
    expect(page.locator("#edit-paths .new")).to_have_text("750")
    page.click("#publish")
    expect(page.locator("#flash")).to_contain_text("Published: v2")
    head = _head(server, ns)
    assert head["version"] == 2 and head["data"]["timeout_ms"] == 750 and head["message"] == "faster"
    # The editor styles itself within the page's Content-Security-Policy (its nonce): nothing was refused.
    assert not [e for e in errors if "Content Security Policy" in e], "\n".join(errors)


def test_moved_head_shows_three_way_instead_of_overwriting(page: Page, server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service/edit")
    _set_document(page, {**V1, "timeout_ms": 111})
    with server.client("admin") as http:  # someone else publishes meanwhile
        assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {**V1, "retries": 8}}).status_code == 201
    page.click("#publish")
    expect(page.locator("#notice")).to_contain_text("expected version 1, but the head is 2")
    expect(page.locator("#three-way")).to_be_visible()
    expect(page.locator("#moved-paths li")).to_contain_text("/retries")
    expect(page.locator("#edit-paths li", has_text="/timeout_ms")).to_have_count(1)
    expect(page.locator(".cm-content")).to_contain_text('"timeout_ms": 111')  # the edit is kept
    assert _head(server, ns)["data"]["retries"] == 8  # not overwritten


def test_propose_approve_by_a_second_user_publish_and_conflict(
    page: Page, second: Page, server: ServerProcess, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    with server.client("admin") as http:
        assert http.put(f"/api/v1/policies/{ns}", json={"approvals_required": 1}).status_code == 200
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service/edit")
    expect(page.locator("#policy-note")).to_contain_text("requires 1 approval")
    expect(page.locator("#publish")).to_have_count(0)  # an editor cannot publish directly here
    _set_document(page, {**V1, "currency": "USD"})
    page.fill("#message", "bill in dollars")
    page.click("#propose")
    expect(page).to_have_url(re.compile(r"/ui/change-requests/\d+\?proposed=1$"))
    expect(page.locator("#cr-state")).to_have_text("open")
    expect(page.locator("#cr-validation")).to_contain_text("valid")
    expect(page.locator("#cr-paths li")).to_contain_text("/currency")
    expect(page.locator("#approve-button")).to_have_count(0)  # nobody approves their own request
    expect(page.locator("#publish-button")).to_have_count(0)
    review_url = page.url.split("?")[0]

    sign_in(second, server, "admin")
    second.goto(review_url)
    second.fill("#comment-message", "checked with billing")
    second.click("#comment-button")
    expect(second.locator("#cr-comments li")).to_contain_text("checked with billing")
    second.fill("#approve-message", "go")
    second.click("#approve-button")
    expect(second.locator("#cr-state")).to_have_text("approved")
    expect(second.locator("#cr-approvals")).to_contain_text("admin")

    page.goto(review_url)
    page.click("#publish-button")
    expect(page.locator("#cr-state")).to_have_text("published")
    head = _head(server, ns)
    assert head["version"] == 2 and head["data"]["currency"] == "USD"

    # A second request whose base moves before it is published: conflicted, with what moved.
    page.goto(f"/ui/configs/{ns}/service/edit")
    _set_document(page, {**V1, "currency": "USD", "retries": 1})
    page.click("#propose")
    conflict_url = page.url.split("?")[0]
    second.goto(conflict_url)
    second.click("#approve-button")
    with server.client("admin") as http:
        assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {**V1, "timeout_ms": 42}}).status_code == 201
    page.goto(conflict_url)
    page.click("#publish-button")
    expect(page.locator(".alert-error")).to_contain_text("conflicted")
    page.goto(conflict_url)
    expect(page.locator("#cr-state")).to_have_text("conflicted")
    expect(page.locator("#cr-moved #moved-paths")).to_contain_text("/timeout_ms")
    assert _head(server, ns)["version"] == 3  # the emergency push stays the head


def test_keyboard_only_edit_and_publish(page: Page, server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service/edit")

    def focused() -> str:
        return str(page.evaluate("() => (document.activeElement.id || document.activeElement.className || '')"))

    for _ in range(30):  # Tab from the top of the page into the editor
        page.keyboard.press("Tab")
        if "cm-content" in focused():
            break
    assert "cm-content" in focused()
    page.keyboard.press("Control+End")
    page.keyboard.press("Tab")  # Tab indents inside the editor; it does not leave it
    assert "cm-content" in focused()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(json.dumps({**V1, "retries": 6}))
    page.keyboard.press("Escape")  # then Tab leaves the editor (CodeMirror's tab focus mode)
    page.keyboard.press("Tab")
    assert focused() == "message", focused()
    page.keyboard.type("via keyboard")
    page.keyboard.press("Tab")
    assert focused() == "check"
    page.keyboard.press("Tab")
    assert focused() == "publish"
    page.keyboard.press("Enter")
    expect(page.locator("#flash")).to_contain_text("Published: v2")
    head = _head(server, ns)
    assert head["data"]["retries"] == 6 and head["message"] == "via keyboard"


def test_forged_or_unauthorized_posts_change_nothing_but_the_audit(
    page: Page, server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1)
    with server.client("admin") as http:
        assert http.put(f"/api/v1/policies/{ns}", json={"approvals_required": 1}).status_code == 200
    with server.client("editor") as http:
        made = http.post(CR, json={"namespace": ns, "name": "service", "data": {**V1, "retries": 2}})
        assert made.status_code == 201
        rid = made.json()["id"]
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service/edit")
    csrf = page.locator("#edit-form input[name=csrf]").input_value()
    cookie = {c["name"]: c["value"] for c in page.context.cookies()}["configd_session"]
    publish = {"intent": "propose", "base_version": "1", "document": json.dumps({**V1, "retries": 9})}
    with httpx.Client(base_url=server.base_url, timeout=30, cookies={"configd_session": cookie}) as http:
        cases = [
            (f"/ui/configs/{ns}/service/edit", publish, server.base_url, "change-request.propose"),  # no CSRF
            (
                f"/ui/configs/{ns}/service/edit",
                {**publish, "csrf": csrf},
                "http://evil.example",
                "change-request.propose",
            ),
            (f"/ui/configs/{ns}/service/edit", {**publish, "csrf": csrf, "intent": "publish"}, server.base_url, "push"),
            (f"/ui/change-requests/{rid}/approve", {"csrf": csrf}, server.base_url, "change-request.approve"),  # own
            (f"/ui/configs/{ns}/service/rollback", {"csrf": csrf, "to_version": "1"}, server.base_url, "rollback"),
        ]
        for path, form, origin, action in cases:
            before = kv_tree(gateway, f"{server.prefix}/")
            answer = http.post(path, data=form, headers={"Origin": origin})
            assert answer.status_code == 403, (path, answer.status_code, answer.text[:300])
            after = kv_tree(gateway, f"{server.prefix}/")
            added = sorted(set(after) - set(before))
            assert len(added) == 1 and added[0].startswith(server.layout.audit_root), (path, added)
            assert {k: v for k, v in after.items() if k not in added} == before, path
            entry = AuditRecord.from_bytes(gateway.get(added[0]).value)  # type: ignore[union-attr]
            assert entry.result == "rejected" and entry.action == action and entry.actor == "editor", entry
