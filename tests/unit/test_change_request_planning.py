"""Change requests decided without I/O (configd.planning.change_requests): who may take each step, the state it
leads to, and the one transaction of a step (CAS on the request, its audit entry)."""

from __future__ import annotations

from typing import Any

import pytest

from configd.auth import Principal
from configd.errors import Forbidden, ReviewRequired, TransitionRefused
from configd.planning import change_requests as plan
from configd_core.errors import ConfigTooLarge, ValidationFailed
from configd_core.layout import MAX_CHANGE_REQUEST_COMMENTS, MAX_CHANGE_REQUEST_DOCUMENT_BYTES, KeyLayout
from configd_core.records import ChangeRequestRecord, PolicyRecord, canonical_json, sha256_hex

AUTHOR = Principal("ann", "editor", ("*",))
PEER = Principal("bob", "editor", ("*",))
THIRD = Principal("cy", "editor", ("*",))
ADMIN = Principal("root", "admin", ("*",))
READER = Principal("rita", "reader", ("*",))


def _policy(approvals: int, approvers: list[str] | None = None) -> PolicyRecord:
    return plan.policy_record("pay", approvals, approvers, actor="root")


def _request(policy: PolicyRecord | None, data: dict[str, Any] | None = None) -> ChangeRequestRecord:
    doc = data or {"a": 2}
    canonical = canonical_json(doc)
    step = plan.proposal(
        7, "pay", "svc", doc, canonical, sha256_hex(canonical),
        base_version=3, base_sha="other", policy=policy, author=AUTHOR.name, message="m",
    )  # fmt: skip
    return step.record


def test_states_follow_the_policy() -> None:
    assert _request(None).state == "approved"  # no policy: nothing to wait for
    two = _policy(2)
    record = _request(two)
    assert record.state == "open"
    record = plan.approval(record, PEER, two).record
    assert record.state == "open" and [a.actor for a in record.approvals] == ["bob"]
    record = plan.approval(record, THIRD, two).record
    assert record.state == "approved"
    plan.publish_check(record, AUTHOR, two)
    done = plan.published(record, AUTHOR, 4)
    assert done.record.state == "published" and done.record.published_version == 4
    assert done.audit.action == "change-request.publish" and done.audit.detail == "change request 7"


def test_refusals() -> None:
    one = _policy(1, ["admin"])
    record = _request(one)
    with pytest.raises(Forbidden, match="may not approve"):
        plan.approval(record, Principal("ann", "admin", ("*",)), one)  # the author, even as an admin
    with pytest.raises(Forbidden, match="not an approver"):
        plan.approval(record, PEER, one)
    with pytest.raises(TransitionRefused, match="0 of 1"):
        plan.publish_check(record, AUTHOR, one)
    with pytest.raises(Forbidden):
        plan.withdrawal(record, PEER)
    with pytest.raises(Forbidden):
        plan.rejection(record, AUTHOR, one, "no")
    approved = plan.approval(record, ADMIN, one).record
    with pytest.raises(TransitionRefused, match="already approved"):
        plan.approval(approved, ADMIN, one)
    with pytest.raises(TransitionRefused, match="now requires 2"):  # the policy tightened after approval
        plan.publish_check(approved, AUTHOR, _policy(2, ["admin"]))
    withdrawn = plan.withdrawal(approved, AUTHOR).record
    for step in (lambda: plan.approval(withdrawn, ADMIN, one), lambda: plan.publish_check(withdrawn, AUTHOR, one)):
        with pytest.raises(TransitionRefused, match="withdrawn"):
            step()
    assert plan.rejection(record, ADMIN, one, "no").record.state == "rejected"
    with pytest.raises(TransitionRefused, match="identical"):
        canonical = canonical_json({"a": 1})
        plan.proposal(1, "pay", "svc", {"a": 1}, canonical, sha256_hex(canonical), base_version=1,
                      base_sha=sha256_hex(canonical), policy=one, author="ann", message="")  # fmt: skip
    big = {"blob": "x" * MAX_CHANGE_REQUEST_DOCUMENT_BYTES}
    with pytest.raises(ConfigTooLarge):
        _request(one, big)


def test_direct_writes_and_approvers() -> None:
    assert plan.direct_write(None, AUTHOR, "pay") is False
    assert plan.direct_write(_policy(0), AUTHOR, "pay") is False
    assert plan.direct_write(_policy(1), ADMIN, "pay") is True  # an emergency push
    with pytest.raises(ReviewRequired, match="/api/v1/change-requests"):
        plan.direct_write(_policy(1), AUTHOR, "pay")
    by_name = _policy(1, ["bob"])
    assert plan.may_approve(by_name, PEER) and not plan.may_approve(by_name, THIRD)
    assert plan.may_approve(_policy(1, ["editor"]), ADMIN) and not plan.may_approve(_policy(1), READER)
    with pytest.raises(ValidationFailed):
        _policy(1, ["reader"])
    with pytest.raises(ValidationFailed):
        _policy(3)


def test_comments_and_the_transaction() -> None:
    record = _request(_policy(1))
    step = plan.comment(record, READER, "why?")
    assert step.record.state == "open" and step.record.comments[0].actor == "rita"
    layout = KeyLayout("p")
    ops = plan.transition_ops(layout, step, 42)
    assert ops[0]["KV"]["Verb"] == "cas" and ops[0]["KV"]["Key"] == "p/change-requests/000000000007"
    assert ops[0]["KV"]["Index"] == 42
    assert ops[1]["KV"]["Key"].startswith("p/audit/pay/")
    with pytest.raises(ValidationFailed):
        plan.comment(record, READER, "  ")
    full = record.model_copy(update={"comments": step.record.comments * MAX_CHANGE_REQUEST_COMMENTS})
    with pytest.raises(TransitionRefused):
        plan.comment(full, READER, "one more")
