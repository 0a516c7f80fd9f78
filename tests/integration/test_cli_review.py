"""``configctl policy|propose|requests|review|approve|reject|publish|withdraw`` against a real server and Consul:
output, ``--json`` and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from configctl import app
from tests.api_support import GOOD, setup_config
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)


def cli(server: ServerProcess, token: str, *args: str) -> Any:
    env = {"CONFIGD_URL": server.base_url, "CONFIGD_TOKEN": server.tokens[token], "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, list(args))


def test_policy_propose_review_approve_publish(server: ServerProcess, unique_ns: str, tmp_path: Path) -> None:
    ns = unique_ns
    setup_config(server, ns)
    assert cli(server, "editor", "policy", "set", ns, "--approvals", "1").exit_code == 6  # admins only
    set_ = cli(server, "admin", "policy", "set", ns, "--approvals", "1", "--approver", "admin")
    assert set_.exit_code == 0 and "1 approval(s) required; approvers: admin" in set_.stdout
    assert json.loads(cli(server, "reader", "policy", "get", ns, "--json").stdout)["approvals_required"] == 1

    proposal = tmp_path / "service.json"
    proposal.write_text(json.dumps({**GOOD, "timeout_ms": 1200}))
    # A plain push is refused in a reviewed namespace (403 ReviewRequired: exit 6), naming the route.
    pushed = cli(server, "editor", "push", f"{ns}/service", str(proposal))
    assert pushed.exit_code == 6 and "/api/v1/change-requests" in pushed.stderr
    made = cli(server, "editor", "propose", f"{ns}/service", str(proposal), "-m", "slower", "--json")
    assert made.exit_code == 0, made.stderr
    rid = json.loads(made.stdout)["id"]
    assert isinstance(rid, int)
    plain = cli(server, "editor", "propose", f"{ns}/service", str(proposal), "-m", "again")
    assert plain.exit_code == 0 and plain.stdout.strip().isdigit()  # prints the id alone on stdout
    other = int(plain.stdout.strip())

    mine = cli(server, "editor", "requests", "--mine", "--namespace", ns, "--json")
    assert {r["id"] for r in json.loads(mine.stdout)} == {rid, other}
    assert json.loads(cli(server, "admin", "requests", "--mine", "-n", ns, "--json").stdout) == []
    shown = cli(server, "reader", "review", str(rid))
    assert shown.exit_code == 0 and "open" in shown.stdout and "/timeout_ms" in shown.stdout
    assert '+  "timeout_ms": 1200' in shown.stdout

    assert cli(server, "editor", "approve", str(rid)).exit_code == 6  # own request / not an approver
    assert cli(server, "editor", "publish", str(rid)).exit_code == 3  # not approved yet
    approved = cli(server, "admin", "approve", str(rid), "-m", "ok")
    assert approved.exit_code == 0 and "approved" in approved.stdout
    published = cli(server, "editor", "publish", str(rid))
    assert published.exit_code == 0 and f"{ns}/service v2" in published.stdout
    # The second request was proposed from v1: the head moved, so publishing it reports a conflict (exit 3).
    assert cli(server, "admin", "approve", str(other)).exit_code == 0
    conflicted = cli(server, "editor", "publish", str(other))
    assert conflicted.exit_code == 3 and "conflicted" in conflicted.stderr
    assert json.loads(cli(server, "reader", "review", str(other), "--json").stdout)["state"] == "conflicted"
    withdrawn = cli(server, "editor", "withdraw", str(other))
    assert withdrawn.exit_code == 0 and "withdrawn" in withdrawn.stdout
    assert cli(server, "admin", "reject", str(other)).exit_code == 3  # final already
    assert cli(server, "reader", "review", "999999").exit_code == 4
