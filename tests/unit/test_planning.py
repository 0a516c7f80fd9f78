"""The server's pure planning layer (configd.planning): the records and transactions of one write, and bulk
planning. No Consul here: these are the decisions the services commit."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from configd.errors import Forbidden
from configd.planning.audit import MAX_DETAIL_CHARS, audit_op, new_entry
from configd.planning.bulk import (
    GroupPlan,
    ImportConflict,
    ImportForbidden,
    ImportItem,
    ImportRejected,
    ImportSchemaNotFound,
    ItemProblem,
    check_items,
    common_prefix,
    import_rejection,
    json_size,
    pack_transactions,
    plan_group,
)
from configd.planning.writes import (
    Heads,
    checked_author,
    checked_config,
    checked_message,
    checked_schema,
    config_write,
    delete_write,
    push_transaction,
    register_transaction,
    schema_and_config_transaction,
    schema_write,
)
from configd_core.errors import (
    ConfigTooLarge,
    InvalidConfig,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)
from configd_core.layout import HEAD_INLINE_BYTES, MAX_AUTHOR_CHARS, MAX_MESSAGE_CHARS, KeyLayout
from configd_core.records import AuditRecord, HeadRecord, SchemaHeadRecord, SchemaRef, VersionRecord, sha256_hex

LAYOUT = KeyLayout("p")
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"]}
NEW = Heads(head=None, head_index=0, schema=None, schema_index=0)


def _value(op: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(op["KV"]["Value"]))


def _verbs(ops: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [(op["KV"]["Verb"], op["KV"]["Key"], op["KV"].get("Index")) for op in ops]


def _write(data: dict[str, Any], head: HeadRecord | None = None, **kw: Any) -> Any:
    canonical = checked_config(data)
    return config_write(
        "ns", "svc", data, canonical, sha256_hex(canonical), head=head, schema_version=1, actor="ann", message="m", **kw
    )


def _schema_head(version: int = 1) -> SchemaHeadRecord:
    return SchemaHeadRecord(namespace="ns", name="svc", version=version, sha256="s" * 64, author="a", created_at="t")


# --- checks ------------------------------------------------------------------------------------------------
def test_message_and_author_limits_are_one_rule() -> None:
    assert checked_message("x" * MAX_MESSAGE_CHARS) == "x" * MAX_MESSAGE_CHARS
    with pytest.raises(ValidationFailed, match=f"longer than {MAX_MESSAGE_CHARS}"):
        checked_message("x" * (MAX_MESSAGE_CHARS + 1))
    with pytest.raises(ValidationFailed, match="author"):
        checked_author("a" * (MAX_AUTHOR_CHARS + 1))


def test_checked_config_and_schema_refuse_what_configd_cannot_store() -> None:
    assert checked_config({"b": 1, "a": [1.5]}) == b'{"a":[1.5],"b":1}'
    with pytest.raises(InvalidConfig):
        checked_config({"x": float("nan")})
    with pytest.raises(ConfigTooLarge):
        checked_config({"x": "y" * (8 * 1024 * 1024)})
    with pytest.raises(ValidationFailed, match="not a valid JSON Schema"):
        checked_schema("ns", "svc", {"type": "no-such-type"})


# --- the records of one write --------------------------------------------------------------------------------
def test_first_version_records_and_small_document_rides_in_the_head() -> None:
    write = _write({"port": 80})
    assert write.record.version == 1 and write.record.parent is None
    assert write.head.version == 1 and write.head.sha256 == write.record.sha256
    assert write.head.inline_data() == {"port": 80}  # ≤ HEAD_INLINE_BYTES: a watcher needs no second read
    assert write.audit.action == "push" and write.audit.from_version is None and write.chunks == ()


def test_next_version_names_its_parent_and_a_rollback_says_so() -> None:
    first = _write({"port": 80})
    second = _write({"port": 81}, head=first.head)
    assert (second.record.version, second.record.parent, second.audit.from_version) == (2, 1, 1)
    back = _write({"port": 80}, head=second.head, rollback_of=1)
    assert back.record.rollback_of == 1 and back.audit.action == "rollback" and back.audit.from_version == 1


def test_large_document_leaves_the_head_and_goes_to_chunks() -> None:
    data = {f"k{i}": "v" * 200 for i in range(40)}
    assert len(checked_config(data)) > HEAD_INLINE_BYTES
    write = _write(data)
    assert write.head.data is None
    big = {f"k{i}": f"{i:08d}" * 40_000 for i in range(3)}  # ~1 MB canonical, incompressible enough for chunks
    chunked = _write(big, record_overhead=400_000)
    puts = chunked.chunk_puts(LAYOUT)
    assert puts and all(key.startswith(LAYOUT.blob_prefix("ns", "svc", chunked.record.sha256)) for key, _ in puts)


# --- the transactions ------------------------------------------------------------------------------------
def test_push_transaction_checks_the_schema_head_and_moves_the_config_head_by_cas() -> None:
    write = _write({"port": 80})
    current = Heads(head=None, head_index=0, schema=_schema_head(), schema_index=17)
    ops = push_transaction(LAYOUT, write, current)
    assert _verbs(ops)[:3] == [
        ("check-index", LAYOUT.schema_head("ns", "svc"), 17),
        ("cas", LAYOUT.version("ns", "svc", 1), 0),  # create-only: a version is never rewritten
        ("cas", LAYOUT.head("ns", "svc"), 0),  # 0: the head must not exist yet
    ]
    verb, key, index = _verbs(ops)[3]
    assert (verb, index) == ("cas", 0) and key.startswith(LAYOUT.audit_prefix("ns"))
    assert VersionRecord.model_validate(_value(ops[1])).version == 1
    assert AuditRecord.model_validate(_value(ops[3])) == write.audit


def test_push_transaction_from_an_existing_head_uses_its_index() -> None:
    first = _write({"port": 80})
    second = _write({"port": 81}, head=first.head)
    ops = push_transaction(LAYOUT, second, Heads(first.head, 41, _schema_head(), 7))
    assert _verbs(ops)[2] == ("cas", LAYOUT.head("ns", "svc"), 41)


def test_register_transaction_guards_the_config_head() -> None:
    write = schema_write("ns", "svc", SCHEMA, "a" * 64, current=None, actor="root", message="", forced=False)
    absent = register_transaction(LAYOUT, write, NEW)
    assert _verbs(absent)[0] == ("check-not-exists", LAYOUT.head("ns", "svc"), None)
    present = register_transaction(LAYOUT, write, Heads(None, 9, None, 0))
    assert _verbs(present)[0] == ("check-index", LAYOUT.head("ns", "svc"), 9)
    assert _verbs(present)[2] == ("cas", LAYOUT.schema_head("ns", "svc"), 0)


def test_schema_and_config_together_guard_each_other_by_their_own_cas() -> None:
    schema = schema_write("ns", "svc", SCHEMA, "a" * 64, current=None, actor="root", message="", forced=False)
    ops = schema_and_config_transaction(LAYOUT, schema, _write({"port": 80}), Heads(None, 3, None, 5))
    assert len(ops) == 6 and not any(v.startswith("check") for v, _, _ in _verbs(ops))
    assert ("cas", LAYOUT.schema_head("ns", "svc"), 5) in _verbs(ops)
    assert ("cas", LAYOUT.head("ns", "svc"), 3) in _verbs(ops)


def test_delete_is_a_tombstone_by_cas_with_its_audit_entry() -> None:
    head = _write({"port": 80}).head
    write = delete_write(head, actor="root", message="")
    assert write.tombstone.deleted and write.tombstone.data is None and write.tombstone.version == head.version
    assert write.tombstone.message == "deleted" and write.audit.action == "delete"
    ops = write.ops(LAYOUT, 12)
    assert _verbs(ops)[0] == ("cas", LAYOUT.head("ns", "svc"), 12) and len(ops) == 2


def test_audit_entries_sort_by_time_and_clip_what_a_rejection_carried() -> None:
    first = new_entry(actor="a", action="push", namespace="ns", name="n", result="rejected", status=422)
    second = new_entry(
        actor="a",
        action="push",
        namespace="ns",
        name="n",
        result="rejected",
        status=422,
        message="m" * (MAX_MESSAGE_CHARS + 50),
        detail="d" * (MAX_DETAIL_CHARS + 50),
    )
    assert first.id < second.id
    assert len(second.message) == MAX_MESSAGE_CHARS and len(second.detail) == MAX_DETAIL_CHARS
    assert audit_op(LAYOUT, second)["KV"]["Key"] == LAYOUT.audit_entry("ns", second.id)


# --- bulk planning ---------------------------------------------------------------------------------------
def _config(name: str, document: Any, **kw: Any) -> ImportItem:
    return ImportItem("config", "ns", name, document, **kw)


def _schema(name: str, document: Any = SCHEMA, **kw: Any) -> ImportItem:
    return ImportItem("schema", "ns", name, document, **kw)


def test_pack_transactions_respects_both_limits_and_never_splits_a_group() -> None:
    assert pack_transactions([(6, 100)] * 25) == [range(0, 10), range(10, 20), range(20, 25)]  # 64 ops: 10 of 6
    assert pack_transactions([(4, 300)] * 5, max_bytes=1000) == [range(0, 3), range(3, 5)]
    assert pack_transactions([(70, 10)]) == [range(0, 1)]  # a group over the limit still goes alone
    assert pack_transactions([]) == []


def test_check_items_reports_every_bad_item_with_its_field() -> None:
    items = [
        _schema("a"),
        _config("a", {"port": 1}),
        ImportItem("config", "Bad NS", "x", {}),
        _config("b", {"x": float("inf")}),
        _config("a", {"port": 2}),
        _config("c", {"port": 3}, force=True),
    ]
    groups, problems = check_items(items)
    assert [(p.index, p.field) for p in problems] == [(2, "namespace"), (3, "document"), (4, ""), (5, "force")]
    assert [(g.name, g.schema is not None, g.config is not None) for g in groups] == []  # "a" is broken: a duplicate


def test_plan_group_creates_unchanged_or_collects_the_problem() -> None:
    validator = Draft202012Validator(SCHEMA)
    sha = sha256_hex(checked_schema("ns", "a", SCHEMA))
    groups, _ = check_items([_config("a", {"port": 1})])
    current = Heads(None, 0, _schema_head().model_copy(update={"sha256": sha}), 4)
    plan = plan_group(groups[0], current, {sha: validator}, None, actor="ann", message="m")
    assert plan.config is not None and not plan.problems
    assert _verbs(plan.ops(LAYOUT))[0] == ("check-index", LAYOUT.schema_head("ns", "a"), 4)

    same = Heads(plan.config.head, 8, current.schema, 4)
    unchanged = plan_group(groups[0], same, {sha: validator}, None, actor="ann", message="m")
    assert unchanged.ops(LAYOUT) == [] and [o.status for o in unchanged.unchanged] == ["unchanged"]

    bad, _ = check_items([_config("a", {"port": "eighty"}, expected_version=3)])
    refused = plan_group(bad[0], current, {sha: validator}, None, actor="ann", message="m")
    kinds = sorted(type(p.error).__name__ for p in refused.problems)
    assert kinds == ["ValidationFailed", "VersionConflict"] and refused.ops(LAYOUT) == []

    orphan, _ = check_items([_config("z", {"port": 1})])
    nothing = plan_group(orphan[0], NEW, {}, None, actor="ann", message="m")
    assert isinstance(nothing.problems[0].error, SchemaNotFound)


def test_plan_group_with_its_schema_uses_the_pair_transaction() -> None:
    groups, _ = check_items([_schema("a"), _config("a", {"port": 1})])
    sha = sha256_hex(checked_schema("ns", "a", SCHEMA))
    plan = plan_group(groups[0], NEW, {sha: Draft202012Validator(SCHEMA)}, None, actor="ann", message="")
    assert isinstance(plan, GroupPlan) and plan.schema is not None and plan.config is not None
    ops = plan.ops(LAYOUT)
    assert len(ops) == 6 and json_size(ops) == len(json.dumps(ops))
    assert plan.config.record.schema_ref == SchemaRef(namespace="ns", name="a", version=1)
    assert [o.status for o in plan.created()] == ["created", "created"]
    assert [o.status for o in plan.missed("conflict", "moved")] == ["conflict", "conflict"]


def test_a_schema_alone_is_checked_against_the_live_config_unless_forced() -> None:
    strict = {"type": "object", "properties": {"port": {"type": "string"}}}
    sha = sha256_hex(checked_schema("ns", "a", strict))
    head = _write({"port": 80}).head
    validators = {sha: Draft202012Validator(strict)}
    groups, _ = check_items([_schema("a", strict)])
    refused = plan_group(groups[0], Heads(head, 5, _schema_head(), 6), validators, {"port": 80}, actor="a", message="")
    assert type(refused.problems[0].error).__name__ == "SchemaIncompatible"
    forced, _ = check_items([_schema("a", strict, force=True)])
    plan = plan_group(forced[0], Heads(head, 5, _schema_head(), 6), validators, {"port": 80}, actor="a", message="")
    assert plan.schema is not None and plan.schema.record.forced
    assert _verbs(plan.ops(LAYOUT))[0] == ("check-index", LAYOUT.head("ns", "a"), 5)


def test_import_rejection_is_the_status_of_its_one_kind_else_422() -> None:
    item = _config("a", {})
    forbidden = ItemProblem(0, item, Forbidden("no"))
    conflict = ItemProblem(1, item, VersionConflict("moved", expected=1, actual=2), "expected_version")
    missing = ItemProblem(2, item, SchemaNotFound("none"))
    assert type(import_rejection([forbidden], 3)) is ImportForbidden
    only = import_rejection([conflict], 3)
    assert type(only) is ImportConflict and (only.expected, only.actual) == (1, 2)  # type: ignore[attr-defined]
    assert type(import_rejection([missing], 3)) is ImportSchemaNotFound
    mixed = import_rejection([forbidden, missing], 3)
    assert type(mixed) is ImportRejected and [e.path for e in mixed.errors] == ["/items/0", "/items/2"]


def test_common_prefix() -> None:
    assert common_prefix(["svc-10", "svc-1", "svc-2"]) == "svc-"
    assert common_prefix(["a"]) == "a" and common_prefix(["a", "b"]) == ""
