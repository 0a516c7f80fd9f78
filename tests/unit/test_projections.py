"""Projections and flags, the pure parts: targets, secret dropping, rendering, the CAS operations and their packing
(configd.planning.projections), and flag keys (configd_core.flags). No Consul here."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from configd.planning.projections import (
    FLAGS_TAG,
    ProjectionKeyTaken,
    Target,
    check_specs,
    follow_up_batches,
    owner_flags,
    projected_document,
    projection_ops,
    render,
    render_all,
    resolve,
    targets,
    without_secrets,
)
from configd.services.projections import ProjectionPlan
from configd_core.consul import KVEntry, op_check_index
from configd_core.errors import InvalidName, ValidationFailed
from configd_core.flags import (
    FlagNotFound,
    FlagTypeMismatch,
    changed_flag_keys,
    flag_leaves,
    parse_flag_key,
    resolve_pointer,
    typed_value,
)
from configd_core.layout import CONSUL_MAX_VALUE_BYTES, CONSUL_TXN_MAX_OPS, MAX_PROJECTED_KEYS, KeyLayout
from configd_core.records import ProjectionSpec, ProjectionsRecord, pretty_json

LAYOUT = KeyLayout("configd")


def spec(kind: str, target: str, fmt: str = "json") -> ProjectionSpec:
    return ProjectionSpec(kind=kind, target=target, format=fmt)  # type: ignore[arg-type]


def record(every: list[ProjectionSpec] = [], **configs: list[ProjectionSpec]) -> ProjectionsRecord:  # noqa: B006
    return ProjectionsRecord(namespace="payments", every_config=every, configs=configs, author="t", updated_at="x")


# --- targets -------------------------------------------------------------------------------------------------
def test_targets_expand_placeholders_and_map_spring_and_tree_keys() -> None:
    assert resolve(spec("document", "apps/{namespace}/{name}.json"), "payments", "service", LAYOUT, "config") == Target(
        "document", "apps/payments/service.json", "json", "config"
    )
    assert resolve(spec("spring", "payments,{name}"), "payments", "prod", LAYOUT, "config").key == (
        "config/payments,prod/data"
    )
    assert resolve(spec("spring", "{name}"), "payments", "service", LAYOUT, "config").key == "config/service/data"
    tree = resolve(spec("tree", "env/{name}"), "payments", "service", LAYOUT, "config")
    assert (tree.key, tree.owns("env/service/a/b"), tree.owns("env/services")) == ("env/service/", True, False)


@pytest.mark.parametrize(
    ("kind", "target", "why"),
    [
        ("document", "configd/heads/x", "inside configd's own prefix"),
        ("document", "configd", "inside configd's own prefix"),
        ("document", "/etc/app", "not a usable Consul key"),
        ("document", "a//b", "not a usable Consul key"),
        ("document", "apps/{app}", "unknown placeholder {app}"),
        ("document", "apps/{name", "unbalanced"),
        ("spring", "a/b", "APP or APP,PROFILE"),
        ("spring", "a,b,c", "APP or APP,PROFILE"),
        ("tree", "", "not a usable Consul key"),
    ],
)
def test_unusable_targets_are_refused(kind: str, target: str, why: str) -> None:
    with pytest.raises(ValidationFailed, match=why):
        resolve(spec(kind, target), "payments", "service", LAYOUT, "config")


def test_namespace_wide_targets_must_name_each_config_and_targets_must_not_overlap() -> None:
    with pytest.raises(ValidationFailed, match=r"\{name\}"):
        check_specs([spec("document", "apps/all.json")], every_config=True)
    check_specs([spec("document", "apps/all.json")], every_config=False)
    both = record([spec("document", "apps/{name}.json")], service=[spec("tree", "env/service")])
    assert [t.key for t in targets(both, "payments", "service", LAYOUT)] == ["apps/service.json", "env/service/"]
    assert [t.scope for t in targets(both, "payments", "other", LAYOUT)] == ["namespace"]
    clash = record([spec("tree", "env/{name}")], service=[spec("document", "env/service/doc")])
    with pytest.raises(ValidationFailed, match="same keys"):
        targets(clash, "payments", "service", LAYOUT)
    assert targets(None, "payments", "service", LAYOUT) == []


def test_owner_flags_name_the_config_and_fit_a_double() -> None:
    flags = owner_flags("payments", "service")
    assert flags == owner_flags("payments", "service") != owner_flags("payments", "other")
    assert flags & FLAGS_TAG == FLAGS_TAG and flags < 2**53


# --- secrets are never projected -------------------------------------------------------------------------------
def test_secret_fields_are_dropped_through_refs_items_and_additional_properties() -> None:
    schema: dict[str, Any] = {
        "$defs": {"secret": {"type": "string", "x-configd-secret": True}},
        "properties": {
            "db": {"properties": {"password": {"writeOnly": True}, "host": {"type": "string"}}},
            "token": {"$ref": "#/$defs/secret"},
            "users": {"items": {"properties": {"pin": {"writeOnly": True}}}},
            "keys": {"additionalProperties": {"$ref": "#/$defs/secret"}},
            "mixed": {"allOf": [{"properties": {"otp": {"writeOnly": True}}}]},
        },
    }
    document = {
        "db": {"password": "p", "host": "h"},
        "token": "t",
        "users": [{"name": "a", "pin": 1}],
        "keys": {"x": "1"},
        "mixed": {"otp": 1, "ok": 2},
        "free": {"password": "not marked"},
    }
    assert without_secrets(document, schema) == {
        "db": {"host": "h"},
        "users": [{"name": "a"}],
        "keys": {},
        "mixed": {"ok": 2},
        "free": {"password": "not marked"},
    }
    assert document["db"] == {"password": "p", "host": "h"}  # the input is not changed
    assert projected_document({"a": 1}, {}) == {"a": 1}
    assert projected_document({"a": 1}, {"writeOnly": True}) == {}


# --- rendering ----------------------------------------------------------------------------------------------
def test_rendering_of_each_kind() -> None:
    document = {"b": {"x": True, "s": "text", "n": None}, "a/b": [1, 2.5], "empty": {}}
    doc = resolve(spec("document", "k.json"), "p", "s", LAYOUT, "config")
    assert render(doc, document) == {"k.json": pretty_json(document).encode()}
    as_yaml = render(resolve(spec("document", "k.yaml", "yaml"), "p", "s", LAYOUT, "config"), document)
    assert yaml.safe_load(as_yaml["k.yaml"]) == document
    spring = render(resolve(spec("spring", "app"), "p", "s", LAYOUT, "config"), document)
    assert yaml.safe_load(spring["config/app/data"]) == document
    tree = render(resolve(spec("tree", "env"), "p", "s", LAYOUT, "config"), document)
    assert tree == {
        "env/a~1b/0": b"1",
        "env/a~1b/1": b"2.5",
        "env/b/n": b"null",
        "env/b/s": b"text",
        "env/b/x": b"true",
    }


def test_values_consul_cannot_hold_are_refused() -> None:
    doc = resolve(spec("document", "k.json"), "p", "s", LAYOUT, "config")
    with pytest.raises(ValidationFailed, match="larger than Consul stores"):
        render_all([doc], {"blob": "x" * CONSUL_MAX_VALUE_BYTES}, "p/s")
    tree = resolve(spec("tree", "env"), "p", "s", LAYOUT, "config")
    with pytest.raises(ValidationFailed, match=f"at most {MAX_PROJECTED_KEYS}"):
        render_all([tree], {f"k{i}": i for i in range(MAX_PROJECTED_KEYS + 1)}, "p/s")
    assert render_all([doc, tree], None, "p/s") == {}


# --- the operations -------------------------------------------------------------------------------------------
def entry(key: str, value: bytes, index: int, flags: int) -> KVEntry:
    return KVEntry(key=key, value=value, modify_index=index, create_index=index, flags=flags)


def test_ops_create_rewrite_skip_and_delete_only_what_configd_wrote() -> None:
    owner = owner_flags("p", "s")
    tree = resolve(spec("tree", "env"), "p", "s", LAYOUT, "config")
    existing = [
        entry("env/same", b"1", 5, owner),
        entry("env/changed", b"old", 6, owner),
        entry("env/gone", b"x", 7, owner),
        entry("env/manual", b"ops", 8, 0),  # not configd's: left alone
    ]
    ops = projection_ops(owner, {"env/same": b"1", "env/changed": b"new", "env/new": b"2"}, existing, [tree], "p/s")
    summary = [(op["KV"]["Verb"], op["KV"]["Key"], op["KV"]["Index"], op["KV"].get("Flags")) for op in ops]
    assert summary == [
        ("cas", "env/changed", 6, owner),
        ("cas", "env/new", 0, owner),
        ("delete-cas", "env/gone", 7, None),
    ]
    assert base64.b64decode(ops[0]["KV"]["Value"]) == b"new"


def test_a_key_written_by_anyone_else_refuses_the_whole_write() -> None:
    owner = owner_flags("p", "s")
    doc = resolve(spec("document", "k.json"), "p", "s", LAYOUT, "config")
    for flags in (0, owner_flags("p", "other")):
        with pytest.raises(ProjectionKeyTaken, match="not written by configd"):
            projection_ops(owner, {"k.json": b"{}"}, [entry("k.json", b"x", 3, flags)], [doc], "p/s")


def test_follow_up_batches_keep_every_transaction_guarded_and_within_limits() -> None:
    owner = owner_flags("p", "s")
    tree = resolve(spec("tree", "env"), "p", "s", LAYOUT, "config")
    ops = projection_ops(owner, {f"env/k{i:03d}": b"1" for i in range(150)}, [], [tree], "p/s")
    guards = [op_check_index("configd/heads/p/s", 9)]
    batches = follow_up_batches(guards, ops)
    assert [len(b) for b in batches] == [64, 64, 25]
    assert all(b[0] == guards[0] and len(b) <= CONSUL_TXN_MAX_OPS for b in batches)
    assert [op for b in batches for op in b[1:]] == ops
    assert follow_up_batches(guards, []) == []

    plan = ProjectionPlan(guards, ops)
    extra, deferred = plan.inline([guards[0]] * 4)
    assert (extra, deferred) == (guards, True)
    small = ProjectionPlan(guards, ops[:3])
    assert small.inline([guards[0]] * 4) == ([*guards, *ops[:3]], False)
    assert json.loads(json.dumps(extra)) == extra


# --- flags ----------------------------------------------------------------------------------------------------
def test_flag_keys_and_pointer_resolution() -> None:
    flag = parse_flag_key("payments/service/features/new_checkout")
    assert (flag.ref, flag.pointer, flag.key) == (
        "payments/service",
        "/features/new_checkout",
        "payments/service/features/new_checkout",
    )
    assert parse_flag_key("payments/service").pointer == ""
    with pytest.raises(InvalidName):
        parse_flag_key("payments")
    with pytest.raises(InvalidName):
        parse_flag_key("Pay/service/x")
    doc = {"a": {"b/c": [10, {"d~e": True}]}}
    assert resolve_pointer(doc, "/a/b~1c/1/d~0e") is True
    assert resolve_pointer(doc, "") == doc
    for missing in ("/x", "/a/b~1c/2", "/a/b~1c/01", "/a/b~1c/0/z"):
        with pytest.raises(FlagNotFound):
            resolve_pointer(doc, missing)


def test_typed_values() -> None:
    assert typed_value(True, "boolean") is True
    assert typed_value(2, "float") == 2.0 and isinstance(typed_value(2, "float"), float)
    assert typed_value([1], "object") == [1]
    for value, kind in ((1, "boolean"), (True, "integer"), (2.5, "integer"), ("1", "integer"), (False, "float")):
        with pytest.raises(FlagTypeMismatch):
            typed_value(value, kind)  # type: ignore[arg-type]


def test_changed_flag_keys_and_leaves() -> None:
    assert changed_flag_keys("p/s", ["/features/a", "/limit"]) == ["p/s", "p/s/features", "p/s/features/a", "p/s/limit"]
    assert changed_flag_keys("p/s", []) == []
    assert list(flag_leaves({"b": [1], "a": {"x/y": 1, "z": {}}})) == [("/a/x~1y", 1), ("/b", [1])]
