"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against a real server and Consul.

These tests FAIL, never skip, when /usr/bin/chromium is missing: `make install` installs it
(scripts/install-chromium.sh).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from configd_core.consul import ConsulGateway
from configd_core.records import ClientRecord, utcnow
from tests.api_support import SERVICE_SCHEMA
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
V1: dict[str, Any] = {"timeout_ms": 500, "retries": 3, "currency": "EUR"}
V2: dict[str, Any] = {"timeout_ms": 900, "retries": 3, "currency": "EUR"}
V3: dict[str, Any] = {"timeout_ms": 900, "retries": 5, "currency": "USD"}
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make install` (scripts/install-chromium.sh)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def push_versions(server: ServerProcess, namespace: str, name: str, *versions: dict[str, Any]) -> None:
    with server.client("admin") as http:
        assert http.put(f"/api/v1/schemas/{namespace}/{name}", json=SERVICE_SCHEMA).status_code == 201
        for i, data in enumerate(versions, start=1):
            answer = http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": data, "message": f"change {i}"})
            assert answer.status_code == 201, answer.text


def head(server: ServerProcess, namespace: str, name: str) -> dict[str, Any]:
    with server.client("reader") as http:
        answer = http.get(f"/api/v1/configs/{namespace}/{name}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def sign_in(page: Page, server: ServerProcess, token_name: str) -> None:
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("#token", server.tokens[token_name])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{server.base_url}/ui/")
    expect(page.locator(".who-name")).to_have_text(token_name)


def session_cookie(context: BrowserContext) -> str:
    cookies = {c["name"]: c for c in context.cookies()}
    return cookies["configd_session"]["value"]


def test_navigate_diff_two_versions_and_roll_back(page: Page, server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1, V2, V3)
    sign_in(page, server, "editor")

    page.click(f"a[href='/ui/configs/{ns}']")
    expect(page.locator("h1")).to_have_text(ns)
    row = page.locator("table.list tbody tr", has=page.locator("a", has_text="service"))
    expect(row.locator("td").nth(1)).to_have_text("v3")
    page.click(f"a[href='/ui/configs/{ns}/service']")
    expect(page.locator("#head-version")).to_have_text("head v3")
    expect(page.locator("#history tbody tr")).to_have_count(3)
    expect(page.locator("#config-json")).to_contain_text('"currency": "USD"')

    page.click("text=Compare versions")
    expect(page).to_have_url(re.compile(r"/diff$"))
    # Choosing a version in a picker reloads the diff (ui.js submits the form on change).
    with page.expect_navigation():
        page.select_option("#pick-from", "1")
    with page.expect_navigation():
        page.select_option("#pick-to", "2")
    expect(page).to_have_url(re.compile(r"from=1&to=2$"))
    expect(page.locator("h1")).to_contain_text("v1 → v2")

    # The changed value is highlighted on both sides, the unchanged ones are not, and its path is listed.
    expect(page.locator("td.code.add")).to_have_count(1)
    expect(page.locator("td.code.add")).to_contain_text('"timeout_ms": 900')
    expect(page.locator("td.code.del")).to_have_count(1)
    expect(page.locator("td.code.del")).to_contain_text('"timeout_ms": 500')
    expect(page.locator("td.code.same", has_text='"retries": 3')).to_have_count(2)
    expect(page.locator("#changed-paths li")).to_have_count(1)
    expect(page.locator("#changed-paths li")).to_contain_text("/timeout_ms")
    expect(page.locator("#changed-paths .old")).to_have_text("500")
    expect(page.locator("#changed-paths .new")).to_have_text("900")
    add_bg = page.locator("td.code.add").evaluate("e => getComputedStyle(e).backgroundColor")
    same_bg = page.locator("td.code.same").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert add_bg != same_bg, (add_bg, same_bg)

    # Roll back to v1 with confirmation: the panel opens first, then the confirm button submits.
    confirm = page.locator("#confirm-rollback")
    expect(confirm).to_be_hidden()
    page.click("#rollback summary")
    expect(confirm).to_be_visible()
    page.fill("#rollback-message", "back to the fast timeout")
    confirm.click()
    expect(page).to_have_url(re.compile(rf"/ui/configs/{ns}/service\?created=4$"))
    expect(page.locator("#flash")).to_contain_text("v4")
    expect(page.locator("#head-version")).to_have_text("head v4")
    first_row = page.locator("#history tbody tr").first
    expect(first_row).to_contain_text("v4")
    expect(first_row).to_contain_text("rollback to v1")
    expect(first_row).to_contain_text("back to the fast timeout")
    expect(page.locator("#config-json")).to_contain_text('"timeout_ms": 500')

    current = head(server, ns, "service")
    assert current["version"] == 4 and current["data"] == V1 and current["rollback_of"] == 1
    assert current["author"] == "editor" and current["message"] == "back to the fast timeout"

    # The audit page, filtered by namespace, shows the rollback.
    page.goto("/ui/audit")
    with page.expect_navigation():
        page.select_option("#audit-namespace", ns)
    rows = page.locator("#audit-table tbody tr")
    expect(rows.first).to_contain_text("rollback")
    expect(rows.first).to_contain_text("editor")
    assert all(ns in text for text in rows.locator("td:nth-child(4)").all_inner_texts())


def test_reader_sees_no_write_action_and_a_forged_rollback_is_refused(
    page: Page, context: BrowserContext, server: ServerProcess, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1, V2)
    sign_in(page, server, "reader")
    page.goto(f"/ui/configs/{ns}/service/diff?from=1&to=2")
    expect(page.locator("#changed-paths li")).to_have_count(1)
    expect(page.locator("#rollback")).to_have_count(0)
    expect(page.locator("form[method=post]")).to_have_count(1)  # only sign-out
    expect(page.get_by_text(re.compile("roll back", re.I))).to_have_count(0)

    # A forged POST with the reader's own valid CSRF token and our Origin: the role check refuses it.
    csrf = page.locator("form[action='/ui/logout'] input[name=csrf]").input_value()
    answer = context.request.post(
        f"/ui/configs/{ns}/service/rollback",
        form={"csrf": csrf, "to_version": "1", "expected_version": "2", "message": "forged"},
        headers={"Origin": server.base_url},
    )
    assert answer.status == 403, answer.text()
    assert "role reader" in answer.text()
    assert head(server, ns, "service")["version"] == 2
    with server.client("admin") as http:
        entries = http.get("/api/v1/audit", params={"namespace": ns}).json()["entries"]
    assert entries[0]["action"] == "rollback" and entries[0]["result"] == "rejected"
    assert entries[0]["actor"] == "reader" and entries[0]["status"] == 403


def test_script_in_a_config_renders_as_text(page: Page, server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    evil = {**V1, "blob": XSS, "flags": {"<img src=x onerror=alert(2)>": True}}
    push_versions(server, ns, "service", V1, evil)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, server, "admin")
    for path in (f"/ui/configs/{ns}/service", f"/ui/configs/{ns}/service/diff?from=1&to=2"):
        page.goto(path)
        page.wait_for_load_state("load")
        assert XSS in page.locator("main").inner_text()
        assert "<img src=x onerror=alert(2)>" in page.locator("main").inner_text()
        # The only script element is the UI's own; no img element came from the config.
        assert page.locator("script").count() == 1
        assert page.locator("main img").count() == 0
    expect(page.locator("#changed-paths")).to_contain_text(XSS)
    assert dialogs == []


def test_csrf_and_origin_checks_refuse_forged_posts(
    page: Page, context: BrowserContext, server: ServerProcess, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1, V2)
    sign_in(page, server, "editor")
    page.goto(f"/ui/configs/{ns}/service/diff?from=1&to=2")
    csrf = page.locator("#rollback input[name=csrf]").input_value()
    cookie = session_cookie(context)
    url = f"{server.base_url}/ui/configs/{ns}/service/rollback"
    fields = {"to_version": "1", "expected_version": "2"}
    with httpx.Client(timeout=30, cookies={"configd_session": cookie}) as http:
        for form, origin in (
            (fields, server.base_url),  # no CSRF token
            ({**fields, "csrf": "0" * 64}, server.base_url),  # a wrong one
            ({**fields, "csrf": csrf}, "http://evil.example"),  # the right one from another site
            ({**fields, "csrf": csrf}, None),  # neither Origin nor Referer
        ):
            headers = {"Origin": origin} if origin else {}
            answer = http.post(url, data=form, headers=headers)
            assert answer.status_code == 403, (form, origin, answer.text)
    assert head(server, ns, "service")["version"] == 2

    # A real cross-site form in the browser: the SameSite=Strict cookie stays home, so nobody is signed in.
    attacker = context.new_page()
    attacker.set_content(
        f'<form method="post" action="{url}"><input name="to_version" value="1">'
        f'<input name="csrf" value="{csrf}"><button id="go">go</button></form>'
    )
    with attacker.expect_navigation():
        attacker.click("#go")
    assert "Sign-in required" in attacker.content()
    assert head(server, ns, "service")["version"] == 2

    # The genuine form with the same token works: the checks above refused the forgery, not the request shape.
    with httpx.Client(timeout=30, cookies={"configd_session": cookie}) as http:
        answer = http.post(url, data={**fields, "csrf": csrf}, headers={"Origin": server.base_url})
    assert answer.status_code == 303 and answer.headers["location"].endswith("?created=3")
    assert head(server, ns, "service")["version"] == 3


def test_sign_in_cookie_and_sign_out(page: Page, context: BrowserContext, server: ServerProcess) -> None:
    page.goto("/ui/login")
    page.fill("#token", "not-a-real-token")
    page.click("button[type=submit]")
    expect(page.locator(".alert-error")).to_have_text("Unknown token.")
    assert not context.cookies()

    sign_in(page, server, "reader")
    (cookie,) = [c for c in context.cookies() if c["name"] == "configd_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # invisible to scripts
    headers = page.request.get("/ui/").headers
    assert "script-src 'self'" in headers["content-security-policy"]

    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    assert not [c for c in context.cookies() if c["name"] == "configd_session"]
    page.goto("/ui/audit")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Faudit$"))


def test_scoped_token_sees_only_its_namespaces(page: Page, server: ServerProcess, unique_ns: str) -> None:
    team_ns = f"team-a-{unique_ns}"
    push_versions(server, unique_ns, "service", V1)
    push_versions(server, team_ns, "service", V1)
    sign_in(page, server, "team-reader")
    expect(page.locator(f"a[href='/ui/configs/{team_ns}']")).to_have_count(1)
    expect(page.locator(f"a[href='/ui/configs/{unique_ns}']")).to_have_count(0)
    answer = page.goto(f"/ui/configs/{unique_ns}/service")
    assert answer is not None and answer.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")


def test_client_counts_and_narrow_screen(
    browser: Browser, page: Page, context: BrowserContext, server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    push_versions(server, ns, "service", V1, V2)
    now = utcnow()
    for instance, applied in (("a1", 2), ("a2", 1), ("a3", 2)):
        record = ClientRecord(
            instance=instance, application="checkout", host="host-1", pid=100, started_at=now, updated_at=now,
            applied={"service": applied},
        )  # fmt: skip
        gateway.put(server.layout.client(ns, instance), record.to_bytes())
    sign_in(page, server, "reader")
    page.goto(f"/ui/configs/{ns}")
    row = page.locator("table.list tbody tr").first
    expect(row.locator("td").nth(5)).to_have_text("2")  # live: applied the head (v2)
    expect(row.locator("td").nth(6)).to_have_text("1")  # outdated: still on v1
    page.goto(f"/ui/configs/{ns}/service")
    expect(page.get_by_text("outdated", exact=True)).to_have_count(1)

    narrow = browser.new_context(base_url=server.base_url, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        narrow.add_cookies(context.cookies())
        phone = narrow.new_page()
        for path in (f"/ui/configs/{ns}/service/diff?from=1&to=2", f"/ui/configs/{ns}/service", "/ui/audit"):
            phone.goto(path)
            width = phone.evaluate("document.documentElement.scrollWidth")
            print(f"{path}: page width at 390 px viewport = {width}")
            assert width <= 390, f"{path} scrolls sideways at 390 px ({width} px)"
    finally:
        narrow.close()
