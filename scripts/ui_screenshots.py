"""Regenerate docs/screenshots/*.png: start `configd dev` on a free port, sign in, photograph the main UI pages.

Run through `make screenshots`. Uses Debian's Chromium (scripts/install-chromium.sh); never downloads a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright

from configd.devagent import free_ports
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import ClientRecord, RolloutFailure, RolloutReport, utcnow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_TOKEN = "dev-admin-token"  # configd dev's fixed admin token


def start_dev(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "configd", "dev", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"configd dev exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(process)
    raise SystemExit(f"configd dev did not come up:\n{log_path.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # configd dev stops its Consul agent on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def add_history(base: str) -> None:
    """A few more versions, a rollback and a refused write, so that history, diff and audit look lived-in."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        current = http.get("/api/v1/configs/payments/service").raise_for_status().json()
        data = dict(current["data"])
        data["retries"] = 4
        data.setdefault("features", {})["new_checkout"] = True
        http.put(
            "/api/v1/configs/payments/service",
            json={"data": data, "message": "enable the new checkout for everyone"},
        ).raise_for_status()
        http.post(
            "/api/v1/configs/payments/service/rollback",
            json={"to_version": 2, "message": "new checkout breaks 3DS on Safari"},
        ).raise_for_status()
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer dev-reader-token"}, timeout=30) as http:
        http.put("/api/v1/configs/payments/service", json={"data": data, "message": "readers cannot push"})


def set_editor(page: Page, data: dict[str, Any]) -> None:
    """Replace the CodeMirror document (the page's editor, exposed as window.configdEditor)."""
    text = json.dumps(data, indent=2) + "\n"
    page.evaluate(
        "t => { const v = window.configdEditor; v.dispatch({changes: {from: 0, to: v.state.doc.length, insert: t}}); }",
        text,
    )


def review_flow(browser: Browser, base: str, out: Path) -> None:
    """The editor with a schema error, then a change request approved by a second user: edit.png, review.png."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as http:
        http.put("/api/v1/policies/payments", json={"approvals_required": 1}).raise_for_status()
        data = dict(http.get("/api/v1/configs/payments/service").raise_for_status().json()["data"])
    editor = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(editor, base, "dev-editor-token")
    editor.goto(f"{base}/ui/configs/payments/service/edit")
    editor.wait_for_selector(".cm-content")
    set_editor(editor, {**data, "currency": "XYZ", "retries": 5})
    editor.fill("#message", "five retries")
    editor.click("#check")
    editor.wait_for_selector(".cm-lintRange-error")
    shoot(editor, base, None, out / "edit.png")
    set_editor(editor, {**data, "retries": 5})
    editor.click("#propose")
    editor.wait_for_url(re.compile(r".*/ui/change-requests/\d+.*"))
    review_url = editor.url.split("?")[0]
    editor.fill("#comment-message", "Retries are idempotent here: checked with the payments team.")
    editor.click("#comment-button")
    admin = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(admin, base, ADMIN_TOKEN)
    admin.goto(review_url)
    admin.fill("#approve-message", "ok for today's release")
    admin.click("#approve-button")
    admin.wait_for_selector("#cr-state.state-approved")
    shoot(admin, base, review_url.removeprefix(base), out / "review.png")
    shoot(admin, base, "/ui/change-requests", out / "change-requests.png")


def consul_address(log_path: Path) -> str:
    """The throwaway Consul agent's address, from `configd dev`'s banner."""
    found = re.search(r"Consul \(throwaway dev agent\): (\S+)", log_path.read_text())
    if found is None:
        raise SystemExit("configd dev did not print its Consul address")
    return found.group(1)


def rollout_flow(page: Page, base: str, consul_addr: str, out: Path) -> None:
    """A rollout of payments/service at its second step, with instances reporting (one failure): rollout.png.

    The reports are written as the SDK writes them (``clients/<ns>/<instance>``); the rollout is aborted after the
    photograph, so the review flow that follows finds the config free."""
    headers = {"Authorization": "Bearer dev-editor-token"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        data = dict(http.get("/api/v1/configs/payments/service").raise_for_status().json()["data"])
        candidate = {**data, "timeout_ms": 2500, "retries": 2}
        body = {
            "data": candidate,
            "cohort": {"labels": {"region": "eu"}, "instances": ["checkout-canary-1"]},
            "steps": [5, 25, 50, 100],
            "bake_seconds": 600,
            "max_failures": 3,
            "message": "longer acquirer timeout, fewer retries",
        }
        rollout = http.post("/api/v1/configs/payments/service/rollouts", json=body).raise_for_status().json()
        http.post("/api/v1/configs/payments/service/rollouts/current/promote", json={"message": "canary ok"})
    rid, base_version = rollout["rollout"]["id"], rollout["rollout"]["base_version"]
    candidate_version = rollout["rollout"]["candidate_version"]
    layout = KeyLayout()
    now = utcnow()
    with ConsulGateway(consul_addr) as gateway:
        for index in range(12):
            on_c = index < 4
            failures = []
            if index == 3:
                failures = [
                    RolloutFailure(instance="checkout-3", kind="callback", reason="ValueError: retries", at=now)
                ]
            version = candidate_version if on_c else base_version
            record = ClientRecord(
                instance=f"checkout-{index}",
                application="checkout",
                host=f"web-{index % 4}",
                pid=4100 + index,
                started_at=now,
                updated_at=now,
                applied={"service": version},
                instance_key=f"checkout-key-{index}",
                labels={"region": "eu" if index < 9 else "us"},
                rollouts={"service": RolloutReport(id=rid, member=on_c, version=version, failures=failures)},
            )
            gateway.put(layout.client("payments", f"checkout-{index}"), record.to_bytes())
    shoot(page, base, "/ui/configs/payments/service", out / "rollout.png")
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        http.post("/api/v1/configs/payments/service/rollouts/current/abort", json={"message": "screenshots done"})
    with ConsulGateway(consul_addr) as gateway:
        for index in range(12):
            gateway.delete(layout.client("payments", f"checkout-{index}"))


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")


def shoot(page: Page, base: str, path: str | None, target: Path) -> None:
    """Photograph ``path`` (None: the page as it is now)."""
    if path is not None:
        page.goto(base + path)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(target), full_page=True)
    print(f"wrote {target.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: run scripts/install-chromium.sh")
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    process = start_dev(port, out / ".configd-dev.log")
    try:
        add_history(base)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                wide = browser.new_page(viewport={"width": 1280, "height": 800})
                wide.goto(f"{base}/ui/login")
                wide.screenshot(path=str(out / "sign-in.png"))
                wide.fill("#token", ADMIN_TOKEN)
                wide.click("button[type=submit]")
                wide.wait_for_url(f"{base}/ui/")
                shoot(wide, base, "/ui/", out / "namespaces.png")
                shoot(wide, base, "/ui/configs/payments", out / "namespace.png")
                shoot(wide, base, "/ui/configs/payments/service", out / "config.png")
                shoot(wide, base, "/ui/configs/payments/service/diff?from=1&to=3", out / "diff.png")
                shoot(wide, base, "/ui/audit", out / "audit.png")
                narrow = browser.new_page(
                    viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
                )
                narrow.context.add_cookies(wide.context.cookies())
                shoot(narrow, base, "/ui/configs/payments/service/diff?from=1&to=3", out / "diff-390.png")
                shoot(narrow, base, "/ui/configs/payments/service", out / "config-390.png")
                rollout_flow(wide, base, consul_address(out / ".configd-dev.log"), out)
                review_flow(browser, base, out)
            finally:
                browser.close()
    finally:
        stop(process)
    (out / ".configd-dev.log").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
