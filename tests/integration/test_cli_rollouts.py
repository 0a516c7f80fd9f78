"""``configctl rollout start|status|promote|pause|resume|abort|history`` against a real server and Consul: output,
``--json``, ``--watch`` without a terminal, and exit codes.

Instance reports are written as the SDK writes them (``clients/<ns>/<instance>`` records), like
tests/integration/test_api_rollouts.py does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from configctl import app
from configd_core.consul import ConsulGateway
from tests.api_support import GOOD, report_rollout, setup_config
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)

CANDIDATE = {**GOOD, "timeout_ms": 900}


def cli(server: ServerProcess, token: str, *args: str, **env: str) -> Any:
    env = {"CONFIGD_URL": server.base_url, "CONFIGD_TOKEN": server.tokens[token], "COLUMNS": "200", **env}
    return CliRunner(env=env).invoke(app, list(args))


def test_start_status_steps_and_history(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str, tmp_path: Path
) -> None:
    ns, ref = unique_ns, f"{unique_ns}/service"
    setup_config(server, ns)
    candidate = tmp_path / "candidate.json"
    candidate.write_text(json.dumps(CANDIDATE))
    args = ["--steps", "5,25,100", "--bake", "1h", "--labels", "region=eu", "--max-failures", "1"]
    started = cli(server, "editor", "rollout", "start", ref, str(candidate), *args, "-m", "slower timeouts")
    assert started.exit_code == 0, started.output
    for needle in ["running", "v1 (H) → v2 (C)", "step 1/3 at 5%", "bake 1h", "cohort  region=eu", "next step in"]:
        assert needle in started.stdout, (needle, started.stdout)

    # A second rollout while one is active: 409 RolloutActive, exit 3, named in the --json error document.
    again = cli(server, "editor", "rollout", "start", ref, str(candidate), "--json")
    assert again.exit_code == 3
    assert json.loads(again.stdout)["error"] == "RolloutActive"
    # Readers read but do not steer (exit 6).
    assert cli(server, "reader", "rollout", "promote", ref).exit_code == 6

    status = json.loads(cli(server, "reader", "rollout", "status", ref, "--json").stdout)
    rid = status["rollout"]["id"]
    assert status["rollout"]["plan"]["steps"] == [5, 25, 100] and status["percent"] == 5
    assert status["rollout"]["plan"]["max_failures"] == 1 and status["rollout"]["plan"]["bake_seconds"] == 3600
    report_rollout(gateway, server, ns, "a", rollout=rid, member=True, version=2)
    report_rollout(gateway, server, ns, "b", rollout=rid, member=False, version=1)
    shown = cli(server, "reader", "rollout", "status", ref)
    assert shown.exit_code == 0
    assert "C 1 · H 1 · 1 of 2 instance(s) in the cohort" in shown.stdout, shown.stdout

    paused = cli(server, "editor", "rollout", "pause", ref, "-m", "looking")
    assert paused.exit_code == 0 and "paused at step 1/3 (5%) — paused" in paused.stdout
    assert "paused: resume to continue" in cli(server, "reader", "rollout", "status", ref).stdout
    assert "resumed at step 1/3" in cli(server, "editor", "rollout", "resume", ref).stdout
    assert "promoted to step 2/3 (25%)" in cli(server, "editor", "rollout", "promote", ref).stdout
    assert "promoted to step 3/3 (100%)" in cli(server, "editor", "rollout", "promote", ref).stdout
    done = cli(server, "editor", "rollout", "promote", ref, "-m", "all good")
    assert done.exit_code == 0 and f"{ref}: rollout {rid} completed by editor; v2 is the head" in done.stdout
    assert json.loads(cli(server, "reader", "get", ref).stdout)["timeout_ms"] == 900

    none = cli(server, "reader", "rollout", "status", ref)
    assert none.exit_code == 4 and "not found" in none.stderr
    history = cli(server, "reader", "rollout", "history", ref)
    assert history.exit_code == 0 and "completed" in history.stdout and "5% → 25% → 100%" in history.stdout
    items = json.loads(cli(server, "reader", "rollout", "history", ref, "--json").stdout)
    assert [i["id"] for i in items] == [rid] and items[0]["state"] == "completed"


def test_manual_rollout_of_a_version_aborted(server: ServerProcess, unique_ns: str) -> None:
    ns, ref = unique_ns, f"{unique_ns}/service"
    setup_config(server, ns, "service", GOOD, CANDIDATE)
    started = cli(
        server, "editor", "rollout", "start", ref, "--version", "1", "--manual", "--instances", "web-1,web-2", "--json"
    )
    assert started.exit_code == 0, started.output
    rollout = json.loads(started.stdout)["rollout"]
    assert (rollout["base_version"], rollout["candidate_version"]) == (2, 3)
    assert rollout["plan"]["auto"] is False and rollout["plan"]["cohort"]["instances"] == ["web-1", "web-2"]
    shown = cli(server, "reader", "rollout", "status", ref).stdout
    assert "waits for promote (completes it)" in shown and "every instance + always web-1, web-2" in shown

    aborted = cli(server, "editor", "rollout", "abort", ref, "-m", "not now")
    assert aborted.exit_code == 0
    assert "aborted by editor; v2 stays the head" in aborted.stdout
    assert json.loads(cli(server, "reader", "get", ref).stdout)["timeout_ms"] == 900
    assert cli(server, "editor", "rollout", "abort", ref).exit_code == 4  # nothing active any more
    items = json.loads(cli(server, "reader", "rollout", "history", ref, "--json").stdout)
    assert items[0]["state"] == "aborted" and items[0]["finished_by"] == "editor"

    # Usage and validation: an unknown version is 404 (exit 4), a candidate failing the schema 422 (exit 1).
    assert cli(server, "editor", "rollout", "start", ref, "--version", "99").exit_code == 4
    bad = Path(__file__).parent / "does-not-exist.json"
    assert cli(server, "editor", "rollout", "start", ref, str(bad)).exit_code == 2


def test_invalid_candidate_exits_1(server: ServerProcess, unique_ns: str, tmp_path: Path) -> None:
    ns, ref = unique_ns, f"{unique_ns}/service"
    setup_config(server, ns)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**GOOD, "timeout_ms": 0}))
    refused = cli(server, "editor", "rollout", "start", ref, str(bad))
    assert refused.exit_code == 1 and "/timeout_ms" in refused.stderr
    assert cli(server, "reader", "rollout", "status", ref).exit_code == 4


def test_watch_without_a_terminal_follows_the_driver_to_the_end(server: ServerProcess, unique_ns: str) -> None:
    ns, ref = unique_ns, f"{unique_ns}/service"
    setup_config(server, ns, "service", GOOD, CANDIDATE)
    assert (
        cli(server, "editor", "rollout", "start", ref, "--version", "1", "--steps", "50,100", "--bake", "1").exit_code
        == 0
    )
    watched = cli(server, "reader", "rollout", "status", ref, "--watch", "--interval", "0.3")
    assert watched.exit_code == 0, watched.output
    lines = watched.stdout.strip().splitlines()
    assert "running step 1/2 50%" in lines[0]
    assert f"{ref}: rollout" in lines[-1] and "completed by configd-rollouts; v3 is the head" in lines[-1]
    assert "\x1b[" not in watched.stdout  # plain text: no terminal, no escape codes


def test_watch_on_a_terminal_redraws_in_place_until_the_end(server: ServerProcess, unique_ns: str) -> None:
    ns, ref = unique_ns, f"{unique_ns}/service"
    setup_config(server, ns, "service", GOOD, CANDIDATE)
    started = cli(server, "editor", "rollout", "start", ref, "--version", "1", "--steps", "50,100", "--bake", "1")
    assert started.exit_code == 0
    # FORCE_COLOR makes rich treat the output as a terminal: the live view (cursor moves), then the last line.
    watched = cli(server, "reader", "rollout", "status", ref, "--watch", "--interval", "0.3", FORCE_COLOR="1")
    assert watched.exit_code == 0, watched.output
    assert "\x1b[" in watched.stdout and "step 1/2 at 50%" in watched.stdout
    assert "completed by configd-rollouts; v3 is the head" in watched.stdout


def test_propose_with_a_rollout_and_publish_starts_it(server: ServerProcess, unique_ns: str, tmp_path: Path) -> None:
    setup_config(server, unique_ns)
    candidate = tmp_path / "candidate.json"
    candidate.write_text(json.dumps(CANDIDATE))
    ref = f"{unique_ns}/service"
    proposed = cli(
        server,
        "editor",
        "propose",
        ref,
        str(candidate),
        "--rollout",
        "--steps",
        "10,100",
        "--bake",
        "2m",
        "--labels",
        "region=eu",
        "--max-failures",
        "2",
        "--json",
    )
    assert proposed.exit_code == 0, proposed.output
    request_id = json.loads(proposed.stdout)["id"]
    shown = cli(server, "reader", "review", str(request_id))
    assert "publishing starts a rollout: region=eu; steps 10%, 100%, 2m each" in shown.stdout, shown.stdout
    bad = cli(server, "editor", "propose", ref, str(candidate), "--rollout", "--steps", "50,10")
    assert bad.exit_code == 2 and "--steps" in bad.output
    published = cli(server, "editor", "publish", str(request_id))
    assert published.exit_code == 0, published.output
    status = cli(server, "reader", "rollout", "status", ref, "--json")
    assert status.exit_code == 0, status.output
    current = json.loads(status.stdout)["rollout"]
    assert current["plan"]["steps"] == [10, 100] and current["plan"]["cohort"]["labels"] == {"region": "eu"}
    assert current["plan"]["max_failures"] == 2 and current["candidate_version"] == 2
