"""Tokens on a running server (issue 18): ``configd tokens add`` takes effect without a restart, a removed or
expired token is refused, and the old plain-text entries of the same file keep working."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from configd.tokens import add_token, remove_token
from tests.conftest import ServerProcess


def _status(server: ServerProcess, token: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/api/v1/configs", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the server did not pick up the tokens file change"
        time.sleep(0.05)


def test_added_token_works_without_restart_and_removed_one_stops(server: ServerProcess) -> None:
    name = f"added-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "configd",
            "tokens",
            "--tokens-file",
            str(server.tokens_file),
            "add",
            name,
            "--role",
            "reader",
            "--namespaces",
            "*",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = done.stdout.strip()
    assert token not in server.tokens_file.read_text()
    started = time.monotonic()
    assert _status(server, token).status_code == 200  # the next request already sees it (stat per request)
    print(f"\nnew token accepted {time.monotonic() - started:.3f}s after `configd tokens add` returned")
    assert _status(server, server.tokens["admin"]).status_code == 200  # plain-text entries of the same file
    pid = server.process.pid

    remove_token(server.tokens_file, name)
    answer = _status(server, token)
    assert answer.status_code == 401 and answer.json()["detail"] == "unknown bearer token"
    assert server.process.pid == pid and server.process.poll() is None


def test_expired_token_is_refused_and_broken_file_keeps_the_old_set(server: ServerProcess) -> None:
    name = f"temp-{uuid.uuid4().hex[:8]}"
    token = add_token(server.tokens_file, name, "reader", ["*"], expires=datetime.now(UTC) + timedelta(seconds=2))
    assert _status(server, token).status_code == 200
    _eventually(lambda: _status(server, token).status_code == 401, timeout=15)
    answer = _status(server, token)
    assert answer.json()["detail"].startswith(f"token {name!r} expired at")
    remove_token(server.tokens_file, name)

    good = server.tokens_file.read_text()
    try:
        server.tokens_file.write_text(good[: len(good) // 2])  # a half-written file
        assert _status(server, server.tokens["reader"]).status_code == 200
        assert "cannot be used" in server.log_tail(200)
    finally:
        server.tokens_file.write_text(good)
    assert json.loads(server.tokens_file.read_text()) == json.loads(good)
    assert _status(server, server.tokens["reader"]).status_code == 200
