"""The small parts the services are built from: field checks, typed ledger replies, per-caller
rate limits and backoff, each with the inputs that try to break it."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.codec import Tensor
from protocol.errors import MalformedMessage
from protocol.net import schema
from protocol.net.backoff import Backoff
from protocol.net.ledger_replies import (
    AccountInfo,
    DisputeInfo,
    JobData,
    JobInfo,
    Status,
    parse_duties,
)
from protocol.net.rate_limit import RateLimiter


def test_check_map_names_the_missing_mistyped_or_unknown_field() -> None:
    spec = {"job_id": schema.digest, "round": schema.uint}
    assert schema.check_map({"job_id": bytes(32), "round": 3}, "q", spec) == {
        "job_id": bytes(32), "round": 3}
    for value, named in (
        ({"job_id": bytes(32)}, "q: field 'round' is missing"),
        ({"job_id": bytes(31), "round": 3}, "q: field 'job_id' must be 32 bytes, got 31 bytes"),
        ({"job_id": bytes(32), "round": True}, "field 'round' must be an unsigned"),
        ({"job_id": bytes(32), "round": -1}, "field 'round' must be an unsigned"),
        ({"job_id": bytes(32), "round": 1, "x": 0}, "q: unknown fields ['x']"),
        ([1, 2], "q must be a map, got list"),
    ):
        with pytest.raises(MalformedMessage) as caught:
            schema.check_map(value, "q", spec)
        assert named in str(caught.value)
    with pytest.raises(MalformedMessage, match=r"field 'l'\[1\] must be 32 bytes"):
        schema.get({"l": [bytes(32), b"x"]}, "l", schema.items(schema.digest, 4), "r")
    with pytest.raises(MalformedMessage, match="at most 1 items"):
        schema.get({"l": [bytes(32)] * 2}, "l", schema.items(schema.digest, 1), "r")
    assert schema.get_optional({}, "o", schema.blob, "r") is None
    tensor = Tensor("int64", (1,), bytes(8))
    assert schema.get({"t": tensor}, "t", schema.tensor, "r") is tensor


GOOD_JOB: dict[str, Any] = {
    "ok": True, "found": True, "node": bytes(32), "commitment_id": bytes(32),
    "recorded_round": 3, "sample_round": 4, "status": "pending", "open_dispute": b"",
    "attested_by": [], "zk": False, "sampled": True, "auditor": bytes(32),
    "assigned_round": 4, "window_end": 12, "reported": False, "reported_round": 0,
    "served": False,
}


def test_ledger_replies_are_checked_field_by_field() -> None:
    job = JobInfo.parse(GOOD_JOB)
    assert job.pending and job.window_end == 12 and not job.open_dispute
    assert JobInfo.parse({"found": False}) == JobInfo(found=False)
    for broken in ({k: v for k, v in GOOD_JOB.items() if k != "window_end"},
                   {**GOOD_JOB, "open_dispute": b"x"}, {**GOOD_JOB, "attested_by": [1]},
                   {**GOOD_JOB, "zk": 1}, {**GOOD_JOB, "auditor": b"x"},
                   {"found": "yes"}, {}):
        with pytest.raises(MalformedMessage, match="ledger job"):
            JobInfo.parse(broken)
    with pytest.raises(MalformedMessage, match="field 'request'"):
        JobData.parse({"found": True, "commitment": b"c"})
    assert JobData.parse({"found": True, "request": b"r", "commitment": b"c"}).output is None
    # a job kept for records is not pending; a reply without the field (an older ledger) is
    assert JobData.parse({"found": True, "request": b"r", "commitment": b"c"}).pending
    assert not JobData.parse({"found": True, "request": b"r", "commitment": b"c",
                              "pending": False}).pending
    with pytest.raises(MalformedMessage, match="field 'pending'"):
        JobData.parse({"found": True, "request": b"r", "commitment": b"c", "pending": "no"})
    dispute = {"found": True, "job_id": bytes(32), "accusers": [], "committee": [],
               "drawn_round": 0, "open": True, "outcome": "", "voted": []}
    assert not DisputeInfo.parse(dispute).on_record
    assert DisputeInfo.parse({**dispute, "on_record": True}).on_record
    with pytest.raises(MalformedMessage, match="field 'on_record'"):
        DisputeInfo.parse({**dispute, "on_record": 1})
    with pytest.raises(MalformedMessage, match="ledger status: field 'nodes'"):
        Status.parse({"round": 1, "beacon_key": b"k", "chain_id": bytes(32), "audit_window": 1,
                      "vote_window": 1,
                      "sample_ppm": 1, "committee_size": 1,
                      "challenge_window": 1, "availability_window": 1, "unbonding_period": 1,
                      "verification_fee": 1, "reward": 1, "min_node_stake": 1,
                      "min_validator_stake": 1, "nodes": "everyone", "validators": [],
                      "length": 1})
    with pytest.raises(MalformedMessage, match=r"field 'unbonding'\[0\] must be a map"):
        AccountInfo.parse({"found": True, "round": 1, "balance": 0, "nonce": 0,
                           **{f"{r}_{f}": 0 for r in ("node", "validator")
                              for f in ("stake", "jailed_until", "offences")},
                           "node_slashed_out": False, "validator_slashed_out": False,
                           "unbonding": [7]})
    with pytest.raises(MalformedMessage, match="ledger duties: field 'votes'"):
        parse_duties({"audits": []})
    audit = {"job_id": bytes(32), "commitment": b"c", "round": 5}
    with pytest.raises(MalformedMessage, match=r"field 'votes'\[0\]: field 'dispute_id'"):
        parse_duties({"audits": [audit], "votes": [audit]})
    audits, votes = parse_duties({"audits": [audit], "votes": [{**audit, "dispute_id": b"d" * 32}]})
    assert audits[0].round == 5 and votes[0].dispute_id == b"d" * 32


def test_a_caller_past_its_rate_waits_and_callers_are_apart() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, max_keys=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: one token every 0.5 s
    assert limiter.take("b") == 0.0  # another caller has its own bucket
    now[0] = 1.0
    assert limiter.take("a") == 0.0
    limiter.take("c")  # a third key: the least recently used ("b") is forgotten
    assert len(limiter._buckets) == 2
    with pytest.raises(ValueError, match="rate > 0"):
        RateLimiter(0, 1)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
