"""Secret fields without a network: which values a schema marks secret, sealing and opening (AES-256-GCM
envelopes bound to namespace, config and pointer), fingerprints and the sha256, masks and diffs, redacted errors,
the key file, and the SDK's one decryption point (LiveSettings keeps its last good settings on a bad key)."""

from __future__ import annotations

import base64
import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.planning.secrets import (
    candidate_form,
    opened,
    plain_values,
    redacted,
    seal,
    secret_pointers,
)
from configd.services.keys import create_key, export_keys, list_keys, reencrypt, rotate_key
from configd_client._cache import LastKnownGoodCache
from configd_client._events import Document
from configd_client._live import LiveSettings
from configd_client._secrets import opened_data
from configd_client._source import SettingsFactory
from configd_core.errors import ConfigdError, ErrorDetail, SecretUnreadable
from configd_core.records import HeadRecord, SchemaRef, canonical_json, document_sha256, sha256_hex
from configd_core.secrets import (
    CHANGED_MASK,
    ENVELOPE_KEY,
    KEYS_FILE_ENV,
    MASK,
    KeyRing,
    envelopes,
    masked,
    masked_pair,
    open_document,
)

pytestmark = pytest.mark.unit

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "host": {"type": "string"},
        "password": {"type": "string", "writeOnly": True, "minLength": 8},
        "db": {"$ref": "#/$defs/Db"},
        "optional": {"anyOf": [{"type": "string", "writeOnly": True}, {"type": "null"}]},
        "replicas": {"type": "array", "items": {"type": "object", "properties": {"key": {"x-configd-secret": True}}}},
    },
    "$defs": {"Db": {"type": "object", "properties": {"password": {"type": "string", "x-configd-secret": True}}}},
}
PLAIN: dict[str, Any] = {
    "host": "db1",
    "password": "hunter2-hunter2",
    "db": {"password": "inner-secret"},
    "optional": None,
    "replicas": [{"key": {"any": ["json", 1]}}, {"key": "second"}],
}


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    path = tmp_path / "keys.json"
    create_key(path, "payments")
    return KeyRing.from_file(path)


def test_secret_fields_come_from_the_schema_only() -> None:
    assert secret_pointers(SCHEMA, PLAIN) == ["/password", "/db/password", "/replicas/0/key", "/replicas/1/key"]
    assert "/optional" in secret_pointers(SCHEMA, {**PLAIN, "optional": "set"})  # null is not secret; a value is
    assert secret_pointers({"type": "object"}, {"password": "x"}) == []  # no naming trick


def test_pydantic_secretstr_marks_itself() -> None:
    class Inner(BaseModel):
        token: SecretStr

    class Model(BaseModel):
        name: str
        password: SecretStr
        maybe: SecretStr | None = None
        inner: Inner

    schema = Model.model_json_schema()
    document = {"name": "n", "password": "p", "maybe": "m", "inner": {"token": "t"}}
    assert secret_pointers(schema, document) == ["/password", "/maybe", "/inner/token"]


def test_seal_and_open_round_trip(ring: KeyRing) -> None:
    first = seal(ring, "payments", "svc", PLAIN, SCHEMA)
    second = seal(ring, "payments", "svc", PLAIN, SCHEMA)
    text = json.dumps(first.data)
    assert all(v not in text for v in ("hunter2-hunter2", "inner-secret", "second"))
    assert first.data["host"] == "db1" and first.data["optional"] is None
    assert first.data["password"] != second.data["password"]  # randomized ciphertext …
    assert first.sha == second.sha  # … the same content: "unchanged"
    assert first.sha == document_sha256(first.data) and first.canonical == canonical_json(first.data)
    assert open_document(ring, "payments", "svc", first.data) == PLAIN
    # one data key per version, wrapped once
    assert len({body["dk"] for _, body in envelopes(first.data)}) == 1
    changed = seal(ring, "payments", "svc", {**PLAIN, "password": "another-one"}, SCHEMA)
    assert changed.sha != first.sha


def test_a_document_without_secrets_needs_no_key_and_hashes_as_before() -> None:
    plain = {"host": "db1", "port": 5432}
    sealed = seal(KeyRing(), "payments", "svc", plain, {"type": "object"})
    assert sealed.data == plain and sealed.sha == sha256_hex(canonical_json(plain))
    assert open_document(None, "payments", "svc", plain) is plain


def test_no_key_for_the_namespace_is_a_clear_error(ring: KeyRing) -> None:
    with pytest.raises(SecretUnreadable, match=r"namespace 'search' has no active key .*configd keys create search"):
        seal(ring, "search", "svc", PLAIN, SCHEMA)


def _fails(ring: KeyRing, namespace: str, name: str, document: Any, *needles: str) -> SecretUnreadable:
    with pytest.raises(SecretUnreadable) as caught:
        open_document(ring, namespace, name, document)
    message = str(caught.value) + json.dumps([e.message for e in caught.value.errors])
    assert all(n in message for n in needles), message
    assert "hunter2" not in message
    return caught.value


def test_moved_tampered_and_unkeyed_ciphertexts_fail_clearly(ring: KeyRing, tmp_path: Path) -> None:
    sealed = seal(ring, "payments", "svc", PLAIN, SCHEMA).data
    kid = ring.active("payments").kid
    # another field, another config, another namespace (with the same key bytes)
    moved = {**sealed, "host": sealed["password"]}
    assert _fails(ring, "payments", "svc", moved, "/host", kid).errors[0].path == "/host"
    _fails(ring, "payments", "other", sealed, "does not decrypt", kid)
    twin = KeyRing({"search": ring.namespaces["payments"]}, "twin")
    _fails(twin, "search", "svc", sealed, "does not decrypt")
    # a flipped bit
    tampered = copy.deepcopy(sealed)
    raw = bytearray(base64.b64decode(tampered["password"][ENVELOPE_KEY]["ct"]))
    raw[-1] ^= 0x01
    tampered["password"][ENVELOPE_KEY]["ct"] = base64.b64encode(bytes(raw)).decode()
    _fails(ring, "payments", "svc", tampered, "/password", "does not decrypt", kid)
    # a wrong key under the right id, and no key at all
    other = tmp_path / "other.json"
    create_key(other, "payments")
    wrong = KeyRing.from_file(other)
    wrong = KeyRing(
        {
            "payments": type(wrong.namespaces["payments"])(
                kid, tuple(type(k)(kid, k.key, k.created_at) for k in wrong.namespaces["payments"].keys)
            )
        },
        "wrong",
    )
    _fails(wrong, "payments", "svc", sealed, "does not decrypt", kid, "'payments'")
    _fails(
        KeyRing(origin="app.json"), "payments", "svc", sealed, f"no key {kid!r} for namespace 'payments'", "app.json"
    )


def test_masks_and_fingerprint_diffs(ring: KeyRing) -> None:
    v1 = seal(ring, "payments", "svc", PLAIN, SCHEMA).data
    v2 = seal(ring, "payments", "svc", {**PLAIN, "password": "changed-pw"}, SCHEMA).data
    assert masked(v1)["password"] == MASK and masked(v1)["db"] == {"password": MASK}
    old, new = masked_pair(v1, v2)
    assert old["password"] == MASK and new["password"] == CHANGED_MASK and new["db"]["password"] == MASK
    same = seal(ring, "payments", "svc", PLAIN, SCHEMA).data
    assert masked_pair(v1, same) == (masked(v1), masked(v1))
    # a dry run's candidate: a mask keeps the head's secret; any plain value "changed" (even the same one: a dry
    # run is a reader's request and must not confirm a guess); never the value
    candidate = candidate_form({**masked(v1), "password": PLAIN["password"]}, SCHEMA, v1)
    _, shown = masked_pair(v1, candidate)
    assert shown["password"] == CHANGED_MASK and shown["db"]["password"] == MASK
    assert PLAIN["password"] not in json.dumps(shown)


def test_the_mask_keeps_the_head_secret_and_envelopes_are_opened(ring: KeyRing) -> None:
    head = seal(ring, "payments", "svc", PLAIN, SCHEMA).data
    edited = {**masked(head), "host": "db2"}
    plain = opened(ring, "payments", "svc", edited, SCHEMA, lambda: head)
    assert plain == {**PLAIN, "host": "db2"}
    assert opened(ring, "payments", "svc", head, SCHEMA, lambda: None) == PLAIN  # rollback, import
    with pytest.raises(SecretUnreadable, match="the head has none"):
        opened(ring, "payments", "svc", edited, SCHEMA, lambda: None)


def test_validation_errors_never_show_a_secret() -> None:
    plain = {**PLAIN, "password": "short"}
    errors = [
        ErrorDetail("/password", "'short' is too short"),
        ErrorDetail("/", "{'password': 'short'} is not valid under any of the given schemas"),
        ErrorDetail("/host", "1 is not of type 'string'"),
    ]
    shown = redacted(errors, plain_values(SCHEMA, plain))
    assert "short" not in json.dumps([e.message for e in shown])
    assert shown[2] == errors[2]


def test_the_sha256_covers_fingerprints_not_ciphertexts(ring: KeyRing) -> None:
    sealed = seal(ring, "payments", "svc", PLAIN, SCHEMA)
    head = HeadRecord(
        namespace="payments",
        name="svc",
        version=1,
        sha256=sealed.sha,
        size=len(sealed.canonical),
        schema_ref=SchemaRef(namespace="payments", name="svc", version=1),
        author="t",
        created_at="now",
        data=sealed.data,
    )
    assert head.inline_data() == sealed.data
    moved = {**sealed.data, "password": sealed.data["db"]["password"]}  # fingerprints move with it
    with pytest.raises(ConfigdError, match="does not match its sha256"):
        head.model_copy(update={"data": moved}).inline_data()


def test_key_file_create_rotate_stage_list_export(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = create_key(path, "payments")
    create_key(path, "search")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigdError, match="already has keys"):
        create_key(path, "payments")
    staged = rotate_key(path, "payments", stage=True)
    assert KeyRing.from_file(path).active("payments").kid == first.kid  # staged: not used yet
    assert rotate_key(path, "payments").kid == staged.kid  # the next rotate activates the staged key
    assert KeyRing.from_file(path).active("payments").kid == staged.kid
    listing = list_keys(path)
    assert [(k.namespace, k.active) for k in listing] == [("payments", False), ("payments", True), ("search", True)]
    assert base64.b64encode(first.key).decode() not in repr(listing)
    app = export_keys(path, ["payments"], tmp_path / "app.json")
    assert sorted(KeyRing.from_file(tmp_path / "app.json").namespaces) == sorted(app.namespaces) == ["payments"]
    with pytest.raises(ConfigdError, match="is not a configd key file"):
        KeyRing.from_json({"format": "configd-keys/1", "namespaces": {"x": {"active": "k", "keys": [{}]}}}, "f")


def test_reencrypt_for_another_environment(ring: KeyRing, tmp_path: Path) -> None:
    create_key(tmp_path / "prod.json", "payments")
    prod = KeyRing.from_file(tmp_path / "prod.json")
    sealed = seal(ring, "payments", "svc", PLAIN, SCHEMA).data
    moved = reencrypt(ring, prod, "payments", "svc", sealed)
    assert open_document(prod, "payments", "svc", moved) == PLAIN
    with pytest.raises(SecretUnreadable):
        open_document(ring, "payments", "svc", moved)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = ""
    password: SecretStr = SecretStr("")


def test_the_sdk_decrypts_in_process_and_keeps_its_last_good_settings(
    ring: KeyRing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "app.json"
    ring.write(keys)
    monkeypatch.setenv(KEYS_FILE_ENV, str(keys))
    live: LiveSettings[Settings] = LiveSettings(SettingsFactory(Settings), "payments", "svc")
    errors: list[Exception] = []
    seen = threading.Event()
    live.on_error(lambda exc: (errors.append(exc), seen.set()))

    def document(version: int, password: str) -> Document:
        sealed = seal(ring, "payments", "svc", {"host": "h", "password": password}, SCHEMA)
        return Document("payments", "svc", version, sealed.sha, sealed.data, "consul")

    good = document(1, "first-password")
    assert live.offer(good)
    assert live.current.password.get_secret_value() == "first-password"
    keys.write_text(json.dumps({"format": "configd-keys/1", "namespaces": {}}))  # the key is gone
    assert not live.offer(document(2, "second-password"))
    assert seen.wait(5) and isinstance(errors[0], SecretUnreadable)
    assert ring.active("payments").kid in str(errors[0]) and "'payments'" in str(errors[0])
    assert live.version == 1 and live.current.password.get_secret_value() == "first-password"
    ring.write(keys)  # the key file is read again when it changes
    assert live.offer(document(3, "third-password"))
    assert live.current.password.get_secret_value() == "third-password"
    live.close()

    # the last-known-good cache keeps the document encrypted and accepts it back
    cache = LastKnownGoodCache(tmp_path / "cache", "configd")
    written = cache.write(good)
    assert "first-password" not in written.read_text() and ENVELOPE_KEY in written.read_text()
    assert cache.read("payments", "svc") == Document("payments", "svc", 1, good.sha256, good.data, "cache")


def test_the_sdk_finds_envelopes_in_the_canonical_bytes_a_source_kept(
    ring: KeyRing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "app.json"
    ring.write(keys)
    monkeypatch.setenv(KEYS_FILE_ENV, str(keys))
    sealed = seal(ring, "payments", "svc", {"host": "h", "password": "pw"}, SCHEMA)
    kept = Document("payments", "svc", 1, sealed.sha, sealed.data, "consul", canonical=canonical_json(sealed.data))
    assert opened_data(kept)["password"] == "pw"  # the marker is found in the bytes: decrypted
    plain = {"host": "h"}
    bare = Document("payments", "svc", 2, sha256_hex(canonical_json(plain)), plain, "consul", canonical_json(plain))
    assert opened_data(bare) is plain  # no marker in the bytes: the document itself, no walk


def test_configd_keys_command_line(ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from configd.__main__ import main

    dev, prod = tmp_path / "dev.json", tmp_path / "prod.json"
    ring.write(dev)
    assert main(["keys", "create", "payments", "--keys-file", str(prod)]) == 0
    assert main(["keys", "rotate", "payments", "--stage", "--keys-file", str(prod)]) == 0
    assert main(["keys", "list", "--keys-file", str(prod)]) == 0
    listed = capsys.readouterr().out
    assert "staged key k2-" in listed and listed.count("payments\tk") == 2 and listed.rstrip().endswith("staged")
    assert base64.b64encode(KeyRing.from_file(prod).active("payments").key).decode() not in listed
    # an exported tree moves to the other environment's key, schemas untouched
    tree = tmp_path / "export" / "payments"
    tree.mkdir(parents=True)
    (tree / "svc.json").write_text(json.dumps(seal(ring, "payments", "svc", PLAIN, SCHEMA).data))
    (tree / "svc.schema.json").write_text(json.dumps(SCHEMA))
    args = ["keys", "reencrypt", str(tmp_path / "export"), "--keys-file", str(dev), "--to-keys", str(prod)]
    assert main(args) == 0
    moved = json.loads((tree / "svc.json").read_text())
    assert open_document(KeyRing.from_file(prod), "payments", "svc", moved) == PLAIN
    assert json.loads((tree / "svc.schema.json").read_text()) == SCHEMA
    assert main(["keys", "create", "payments", "--keys-file", str(prod)]) == 1  # refused: it has keys already
