"""The ledger service's ops, called as the ledger protocol calls them, on a real SQLite ledger.

Every op checks its request whole: a missing, mistyped or unknown field is
refused naming it, and nothing changes. The account transactions arrive
signed by their account; the faucet mints only for its keys; ``job_data``
serves the recorded request, commitment and posted output; a report of
unavailability is answered with ``serve_data`` or slashed; stake unbonds and
is withdrawn after its period; ``duties`` lists what the ledger assigned a
validator; ``can_pay`` counts fees a node holds back and the node's jobs in
flight, and refuses an expired request;
``offences`` names what a slash was for.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import trio

from protocol import codec
from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.errors import MalformedMessage, ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest
from protocol.net import schema, wire
from protocol.net.host import PeerHost
from protocol.net.ledger_replies import (
    AccountInfo,
    JobData,
    JobInfo,
    Offence,
    Status,
    parse_duties,
    parse_record,
)
from protocol.net.metrics import Metrics
from slashing import Ledger, LedgerParams
from slashing.service import OPS, Genesis, LedgerService, safe_params
from slashing.transactions import transaction_signer
from tests.net_helpers import BEACON_SECRET, GENESIS_FUNDS, free_port, malformed_maps

NODE = SigningKey.derive("ledger-service/node")
VALIDATOR = SigningKey.derive("ledger-service/validator")
CLIENT = SigningKey.derive("ledger-service/client")
FAUCET = SigningKey.derive("ledger-service/faucet")
STRANGER = SigningKey.derive("ledger-service/stranger")
MODEL = sha256(b"ledger-service/model")
GOOD_FIELDS: dict[Any, Any] = {schema.digest: bytes(32), schema.uint: 1, schema.blob: b"\x01" * 8}
"""A well-typed value for each kind of field an op takes."""


UNBONDING = 25
"""Rounds of unbonding: the liability horizon of these windows."""


def service(tmp: Path, **params: int) -> LedgerService:
    merged = {**LedgerParams.default().__dict__, "committee_size": 1, "sample_ppm": 1_000_000,
              "challenge_window": 2, "availability_window": 2, "unbonding_period": UNBONDING,
              **params}
    genesis = Genesis(params=safe_params(LedgerParams(**merged)), mints=tuple(
        (k.public.raw, GENESIS_FUNDS) for k in (NODE, VALIDATOR, CLIENT)))
    host = PeerHost(SigningKey.derive("ledger-service/ledger"),
                    f"/ip4/127.0.0.1/tcp/{free_port()}", (), Metrics())
    return LedgerService(host, Ledger.open(tmp / "ledger.sqlite"), DevnetBeacon(BEACON_SECRET),
                         genesis, 1.0, host.metrics, faucet=frozenset({FAUCET.public.raw}),
                         faucet_limit=1_000)


def ask(ledger: LedgerService, sender: SigningKey = CLIENT, **request: Any) -> dict[str, Any]:
    """One request through the op table; a refused one raises its ProtocolError."""

    async def main() -> bytes:
        return await ledger.handle(codec.encode(request), sender.public.raw)

    reply = wire.decode_map(trio.run(main), 1 << 24)
    return dict(wire.check_response(reply))


def tx(ledger: LedgerService, key: SigningKey, kind: str, nonce: int, **fields: Any) -> bytes:
    """``kind`` signed by ``key`` with ``nonce``, for ``ledger``'s chain."""
    chain_id = ledger.ledger.state.chain_id
    assert chain_id is not None
    return transaction_signer(key)(kind, nonce, {**fields, "chain_id": chain_id})


def job(ledger: LedgerService, nonce: int, output: Tensor, node: SigningKey = NODE
        ) -> tuple[JobRequest, Commitment]:
    chain_id = ledger.ledger.state.chain_id
    assert chain_id is not None
    x = Tensor.from_torch(torch.ones((1, 4)) * nonce)
    request = JobRequest(model_id=MODEL, input=x, client=CLIENT.public.raw,
                         node=node.public.raw, nonce=nonce, fee=110, expiry_round=1_000,
                         chain_id=chain_id).signed(CLIENT)
    commitment = Commitment(job_id=request.job_id, model_id=MODEL,
                            input_hash=sha256(codec.encode(x)),
                            output_hash=sha256(codec.encode(output)),
                            node=node.public.raw, chain_id=chain_id).signed(node)
    return request, commitment


def bonded(tmp: Path, **params: int) -> LedgerService:
    ledger = service(tmp, **params)
    ask(ledger, NODE, op="bond", tx=tx(ledger, NODE, "bond", 1, role="node", amount=20_000))
    ask(ledger, VALIDATOR, op="bond",
        tx=tx(ledger, VALIDATOR, "bond", 1, role="validator", amount=20_000))
    return ledger


def test_requests_with_missing_mistyped_or_unknown_fields_are_refused_by_name(
    tmp_path: Path,
) -> None:
    ledger = service(tmp_path)
    length = ledger.ledger.length
    for request, named in (
        ({"op": "job"}, "field 'job_id' is missing"),
        ({"op": "job", "job_id": b"short"}, "must be 32 bytes"),
        ({"op": "job", "job_id": bytes(32), "zzz": 1}, "unknown fields ['zzz']"),
        ({"op": "beacon", "round": -1}, "unsigned 64-bit"),
        ({"op": "jobs_since", "after": "0"}, "field 'after'"),
        ({"op": "nope"}, "unknown ledger op 'nope'"),
        ({"op": 5}, "unknown ledger op 5"),
        ({"op": "bond", "tx": tx(ledger, NODE, "withdraw", 1)}, "is a withdraw, not a bond"),
        ({"op": "bond", "tx": b"\x01\x02"}, "not valid msgpack"),
        ({"op": "serve_data", "job_id": bytes(32), "output": 3}, "field 'output'"),
    ):
        with pytest.raises(ProtocolError, match=re.escape(named)):
            ask(ledger, NODE, **request)
    from slashing.events import Bond

    unsigned = Bond(account=NODE.public.raw, role="node", amount=20_000).encode()
    with pytest.raises(MalformedMessage, match="must be signed"):
        ask(ledger, NODE, op="bond", tx=unsigned)
    assert ledger.ledger.length == length
    status = Status.parse(ask(ledger, op="status"))
    assert status.challenge_window == 2 and status.min_node_stake == 10_000


def test_the_faucet_mints_only_for_its_keys_and_within_its_limit(tmp_path: Path) -> None:
    ledger = service(tmp_path)
    with pytest.raises(MalformedMessage, match="not a faucet key"):
        ask(ledger, STRANGER, op="mint", account=STRANGER.public.raw, amount=10)
    with pytest.raises(MalformedMessage, match=r"1\.\.1000"):
        ask(ledger, FAUCET, op="mint", account=STRANGER.public.raw, amount=1_001)
    ask(ledger, FAUCET, op="mint", account=STRANGER.public.raw, amount=1_000)
    assert AccountInfo.parse(ask(ledger, op="account", account=STRANGER.public.raw)).balance \
        == 1_000


def test_account_transactions_are_signed_and_stake_leaves_after_its_period(
    tmp_path: Path,
) -> None:
    ledger = bonded(tmp_path)
    account = AccountInfo.parse(ask(ledger, op="account", account=VALIDATOR.public.raw))
    assert account.validator.stake == 20_000 and account.nonce == 1
    with pytest.raises(ProtocolError, match=r"nonce 1 .* already used"):
        ask(ledger, op="bond", tx=tx(ledger, VALIDATOR, "bond", 1, role="validator", amount=1))
    ask(ledger, op="unbond",
        tx=tx(ledger, VALIDATOR, "unbond", 2, role="validator", amount=20_000))
    account = AccountInfo.parse(ask(ledger, op="account", account=VALIDATOR.public.raw))
    (entry,) = account.unbonding
    assert entry.amount == 20_000 and entry.release_round == account.round + UNBONDING
    with pytest.raises(ProtocolError, match=f"next is released in round {entry.release_round}"):
        ask(ledger, op="withdraw", tx=tx(ledger, VALIDATOR, "withdraw", 3))
    while ledger.ledger.state.current_round < entry.release_round:
        ledger.advance_round()
    ask(ledger, op="withdraw", tx=tx(ledger, VALIDATOR, "withdraw", 3))
    after = AccountInfo.parse(ask(ledger, op="account", account=VALIDATOR.public.raw))
    assert after.balance == account.balance + 20_000 and not after.unbonding


def test_job_data_reports_and_served_outputs(tmp_path: Path) -> None:
    ledger = bonded(tmp_path)
    output = Tensor("float32", (1, 2), bytes(8))
    served_request, served = job(ledger, 1, output)
    withheld_request, withheld = job(ledger, 2, output)
    for request, commitment in ((served_request, served), (withheld_request, withheld)):
        ask(ledger, NODE, op="record_job", request=request.encode(),
            commitment=commitment.encode())
    data = JobData.parse(ask(ledger, op="job_data", job_id=served.job_id))
    assert data.request == served_request.encode() and data.commitment == served.encode()
    assert data.output is None
    ledger.advance_round()  # the sample round: the ledger draws the only validator for both
    audits, votes = parse_duties(ask(ledger, op="duties", validator=VALIDATOR.public.raw))
    assert sorted((d.job_id, d.commitment) for d in audits) == sorted(
        (c.job_id, c.encode()) for c in (served, withheld)) and votes == []
    assert parse_duties(ask(ledger, op="duties", validator=NODE.public.raw)) == ([], [])
    for commitment, nonce in ((served, 2), (withheld, 3)):
        ask(ledger, VALIDATOR, op="report_unavailable",
            tx=tx(ledger, VALIDATOR, "report_unavailable", nonce, job_id=commitment.job_id))
    reported = ask(ledger, op="open_challenges", node=NODE.public.raw)["jobs"]
    assert sorted(reported) == sorted([served.job_id, withheld.job_id])
    with pytest.raises(wire.RemoteError, match="hashes to"):
        ask(ledger, op="serve_data", job_id=served.job_id, output=codec.encode(
            Tensor("float32", (1, 2), b"\x01" * 8)))
    ask(ledger, STRANGER, op="serve_data", job_id=served.job_id, output=codec.encode(output))
    data = JobData.parse(ask(ledger, op="job_data", job_id=served.job_id))
    assert data.output == codec.encode(output)
    assert ask(ledger, op="open_challenges", node=NODE.public.raw)["jobs"] == [withheld.job_id]
    for _ in range(4):
        ledger.advance_round()
    withheld_job = JobInfo.parse(ask(ledger, op="job", job_id=withheld.job_id))
    assert withheld_job.status == "refunded" and withheld_job.reported
    kept = JobData.parse(ask(ledger, op="job_data", job_id=withheld.job_id))
    assert kept.found and not kept.pending  # kept for records, audited no more
    offences = Offence.parse_list(ask(ledger, op="offences", account=NODE.public.raw))
    assert [(o.kind, o.job_id) for o in offences] == [("unavailable", withheld.job_id)]


def test_record_lists_the_nodes_sampled_jobs_and_keeps_them_once_final(tmp_path: Path) -> None:
    """``record``: the ids a ``RECORD`` dispute over a job is judged on, the node's sampled jobs
    of the model recorded before it, oldest first; their data stays served once they are final,
    marked not pending, so a committee can re-execute them."""
    ledger = bonded(tmp_path)
    made = []
    for nonce in range(1, 5):
        request, commitment = job(ledger, nonce, Tensor("float32", (1, 2), bytes(8)))
        ask(ledger, NODE, op="record_job", request=request.encode(),
            commitment=commitment.encode())
        made.append(commitment)
        ledger.advance_round()
    for _ in range(40):
        ledger.advance_round()  # every job final: silent audits run out their draws
    statuses = {JobInfo.parse(ask(ledger, op="job", job_id=c.job_id)).status for c in made}
    assert "pending" not in statuses
    listed = parse_record(ask(ledger, op="record", job_id=made[-1].job_id))
    assert listed == [c.job_id for c in made[:-1]]
    assert parse_record(ask(ledger, op="record", job_id=made[0].job_id)) == []
    for commitment in made:
        data = JobData.parse(ask(ledger, op="job_data", job_id=commitment.job_id))
        assert data.found and not data.pending and data.commitment == commitment.encode()
    # a job the ledger never recorded has no record; a malformed id is refused by name
    assert parse_record(ask(ledger, op="record", job_id=sha256(b"unknown"))) == []
    with pytest.raises(MalformedMessage, match="job_id"):
        ask(ledger, op="record", job_id=b"short")
    # a hostile ledger's reply: too long, or listing a job twice, is refused
    with pytest.raises(MalformedMessage, match="at most 128 items"):
        parse_record({"jobs": [sha256(bytes([i % 256, i // 256])) for i in range(200)]})
    with pytest.raises(MalformedMessage, match="twice"):
        parse_record({"jobs": [made[0].job_id, made[0].job_id]})


def test_can_pay_counts_the_fees_a_node_holds_back(tmp_path: Path) -> None:
    ledger = bonded(tmp_path)

    def payable(**fields: Any) -> tuple[bool, str]:
        reply = ask(ledger, op="can_pay", **fields)
        return reply["payable"], reply["reason"]

    client, node = CLIENT.public.raw, NODE.public.raw
    terms = {"client": client, "nonce": 1, "fee": 110, "node": node, "expiry_round": 1_000}
    assert payable(**terms) == (True, "")
    assert "outside 10..110" in payable(**{**terms, "fee": 111})[1]
    assert "no account" in payable(**{**terms, "client": STRANGER.public.raw})[1]
    ok, reason = payable(**terms, held=GENESIS_FUNDS)
    assert not ok and f"plus {GENESIS_FUNDS} held" in reason
    request, commitment = job(ledger, 7, Tensor("float32", (1,), bytes(4)))
    ask(ledger, NODE, op="record_job", request=request.encode(), commitment=commitment.encode())
    assert "already used nonce 7" in payable(**{**terms, "nonce": 7})[1]
    # the node's stake covers stake/(p*S) jobs in flight: 20 000/(1 * S); one is recorded
    params = ledger.ledger.state.params
    assert params is not None
    limit = 20_000 // params.fraud_slash
    assert payable(**terms, in_flight=limit - 2)[0]
    assert "jobs in flight, the most its stake" in payable(**terms, in_flight=limit - 1)[1]
    assert "not bonded as a node" in payable(**{**terms, "node": STRANGER.public.raw})[1]
    while ledger.ledger.state.current_round <= 3:
        ledger.advance_round()
    assert "expired after round 3" in payable(**{**terms, "expiry_round": 3})[1]


def malformed_requests(op: str, rng: random.Random, n: int) -> list[bytes]:
    """Malformed forms of a request for ``op`` (:func:`tests.net_helpers.malformed_maps`)."""
    spec = OPS[op]
    good = {"op": op, **{name: GOOD_FIELDS[check] for name, check in spec.required.items()}}
    return malformed_maps(good, rng, n)


async def answer_all(handle: Callable[[bytes, bytes], Awaitable[bytes]], payloads: list[bytes],
                     sender: bytes) -> int:
    """Send every payload: each is refused with a ProtocolError (which the host turns into an
    error reply) or answered with a reply map (a bit flip may leave a valid query); nothing else.
    Returns how many were refused."""
    refused = 0
    for payload in payloads:
        try:
            reply = await handle(payload, sender)
        except ProtocolError:
            refused += 1
            continue
        decoded = wire.decode_map(reply, 1 << 24)
        refused += decoded["ok"] is False
    return refused


def test_every_op_refuses_malformed_requests_and_nothing_changes(tmp_path: Path) -> None:
    ledger = bonded(tmp_path)
    before = (ledger.ledger.length, ledger.ledger.state_hash())
    rng = random.Random(15)

    async def main() -> int:
        return sum([await answer_all(ledger.handle, malformed_requests(op, rng, 120),
                                     STRANGER.public.raw) for op in OPS])

    assert trio.run(main) >= 100 * len(OPS)  # all but a few bit flips inside an id
    assert (ledger.ledger.length, ledger.ledger.state_hash()) == before
    assert Status.parse(ask(ledger, op="status")).length == before[0]
