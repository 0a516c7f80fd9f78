"""Tokens (issue 18): the file keeps only hashes, entries may expire, the old plain-text format still loads (with a
warning), and a changed file is reloaded by swapping the book (a broken edit never replaces a good book)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from configd.auth import TokenBook, token_digest
from configd.errors import Unauthenticated
from configd.tokens import TOKEN_PREFIX, TokenFile, add_token, list_tokens, parse_expiry, remove_token
from configd_core.errors import ConfigdError


def test_add_stores_only_the_hash_and_the_token_authenticates(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "ci", "editor", ["payments", "team-*"])
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    text = path.read_text()
    assert token not in text and token_digest(token) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    principal = TokenBook.from_file(path).authenticate(token)
    assert (principal.name, principal.role, principal.namespaces) == ("ci", "editor", ("payments", "team-*"))
    with pytest.raises(Unauthenticated, match="unknown bearer token"):
        TokenBook.from_file(path).authenticate(token + "x")


def test_add_refuses_a_duplicate_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "ci", "reader", ["*"])
    before = path.read_bytes()
    with pytest.raises(ConfigdError, match="already"):
        add_token(path, "ci", "admin", ["*"])
    with pytest.raises(ConfigdError, match="role"):
        add_token(path, "other", "root", ["*"])
    assert path.read_bytes() == before


def test_remove_and_list_never_show_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    add_token(path, "a", "reader", ["*"])
    token_b = add_token(path, "b", "admin", ["x"], expires=datetime(2030, 1, 1, tzinfo=UTC))
    listed = list_tokens(path)
    assert [(e["name"], e["expires"], e["stored"]) for e in listed] == [
        ("a", None, "sha256"),
        ("b", "2030-01-01T00:00:00Z", "sha256"),
    ]
    assert token_b not in json.dumps(listed)
    remove_token(path, "a")
    assert [e["name"] for e in list_tokens(path)] == ["b"]
    with pytest.raises(ConfigdError, match="no token named"):
        remove_token(path, "a")


def test_an_expired_token_is_refused_with_its_expiry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    expires = datetime.now(UTC) + timedelta(hours=1)
    token = add_token(path, "temp", "reader", ["*"], expires=expires)
    book = TokenBook.from_file(path)
    assert book.authenticate(token).name == "temp"
    with pytest.raises(Unauthenticated, match="token 'temp' expired at"):
        book.authenticate(token, now=expires + timedelta(seconds=1))


def test_expiry_parsing() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert parse_expiry("90d", now) == now + timedelta(days=90)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-01-01T00:00:00Z", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigdError, match="past"):
        parse_expiry("2020-01-01", now)
    with pytest.raises(ConfigdError, match="duration"):
        parse_expiry("soon", now)


def test_the_plain_text_format_still_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    entry = {"name": "old", "token": "old-plain-token", "role": "admin", "namespaces": ["*"]}
    path.write_text(json.dumps({"tokens": [entry]}))
    with caplog.at_level(logging.WARNING, logger="configd"):
        book = TokenBook.from_file(path)
    assert book.authenticate("old-plain-token").name == "old"
    assert "plain text" in caplog.text and "old-plain-token" not in caplog.text
    assert list_tokens(path)[0]["stored"] == "plain text"


def test_an_entry_needs_exactly_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    for entry in (
        {"name": "x", "role": "admin"},
        {"name": "x", "role": "admin", "token": "12345678", "sha256": token_digest("12345678")},
        {"name": "x", "role": "admin", "sha256": "not-hex"},
    ):
        path.write_text(json.dumps({"tokens": [entry]}))
        with pytest.raises(ConfigdError, match="invalid tokens file"):
            TokenBook.from_file(path)


def test_a_changed_file_is_swapped_in_and_a_broken_one_is_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    first = add_token(path, "first", "reader", ["*"])
    tokens = TokenFile(path)
    old_book = tokens.book
    assert tokens.authenticate(first).name == "first"

    second = add_token(path, "second", "editor", ["*"])
    assert tokens.authenticate(second).name == "second"  # no restart
    assert tokens.book is not old_book
    # A request that started under the old book finishes under it: the book itself never changes.
    assert old_book.authenticate(first).name == "first"
    with pytest.raises(Unauthenticated):
        old_book.authenticate(second)

    good = tokens.book
    path.write_text('{"tokens": [')  # a broken (or half-written) edit
    with caplog.at_level(logging.ERROR, logger="configd"):
        assert tokens.authenticate(second).name == "second"
        assert tokens.book is good
    assert "cannot be used" in caplog.text
    assert caplog.text.count("cannot be used") == 1  # reported once per change, not per request

    remove_token_file = tmp_path / "tokens.json"
    remove_token_file.write_text(json.dumps({"tokens": []}))
    os.utime(remove_token_file, ns=(1, 1))  # a different identity, even within one mtime tick
    with pytest.raises(Unauthenticated):
        tokens.authenticate(second)


def test_configd_tokens_add_prints_the_token_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    command = [sys.executable, "-m", "configd", "tokens", "--tokens-file", str(path)]
    done = subprocess.run(
        [*command, "add", "ci", "--role", "editor", "--namespaces", "payments,team-*", "--expires", "30d"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and "only time" in done.stderr
    assert TokenBook.from_file(path).authenticate(token).namespaces == ("payments", "team-*")
    listed = subprocess.run([*command, "list"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert listed.startswith("ci\teditor\tpayments,team-*\t") and token not in listed
    again = subprocess.run(
        [*command, "add", "ci", "--role", "editor", "--namespaces", "*"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "already" in again.stderr
