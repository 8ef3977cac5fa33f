"""The ledger: every rule and guard, the SQLite event log, and a stateful adversary."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from protocol import codec
from protocol.codec import Tensor
from protocol.errors import (
    BadSignature,
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    ReplayedMessage,
    UnsupportedVersion,
)
from protocol.hashing import sha256
from protocol.keys import PublicKey, SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from protocol.sampling import PPM, draw_auditor, draw_dispute_committee, sampled
from slashing import constants as c
from slashing.events import (
    EVENT_TYPES,
    Accuse,
    AccuseInvalidProof,
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    PlantCanary,
    RecordJob,
    RegisterBeacon,
    RegisterZkModel,
    ReportUnavailable,
    RevealCanary,
    ServeData,
    SetParams,
    Unbond,
    Withdraw,
    canary_digest,
    decode_event,
)
from slashing.rules import (
    InsufficientFunds,
    LedgerRuleError,
    NonceOutOfOrder,
    NotAssigned,
    NotOnCommittee,
    NotSampled,
    WrongChain,
    apply_event,
    genesis_chain_id,
    install_proof_checker,
    is_bonded_validator,
    open_dispute_of,
    process_event,
)
from slashing.state import (
    Dispute,
    Job,
    JobStatus,
    LedgerParams,
    State,
    decode_state,
    encode_state,
    state_hash,
)
from slashing.store import Ledger, LedgerCorrupt, chain_hash

# -- A small world: keys, genesis, message builders ---------------------------------------------

CLIENT = SigningKey.derive("ledger/client")
POOR_CLIENT = SigningKey.derive("ledger/poor-client")
NODE = SigningKey.derive("ledger/node")
OTHER_NODE = SigningKey.derive("ledger/other-node")
VALIDATORS = tuple(SigningKey.derive(f"ledger/validator-{i}") for i in range(5))
STRANGER = SigningKey.derive("ledger/stranger")
CHEATER = SigningKey.derive("ledger/cheater")
EXTRA_VALIDATOR = SigningKey.derive("ledger/validator-5")
EXTRA_VALIDATORS = tuple(SigningKey.derive(f"ledger/validator-{i}") for i in range(5, 12))
"""More validators, for committees drawn again and again."""
CANARY_NODE = SigningKey.derive("ledger/canary-node")
"""The operator's node for canaries: bonded like any other, its outputs deliberately wrong."""
KEY_OF = {k.public.raw: k for k in (CLIENT, POOR_CLIENT, NODE, OTHER_NODE, CHEATER, STRANGER,
                                    CANARY_NODE, *VALIDATORS, *EXTRA_VALIDATORS)}

BEACON_KEY = bytes(range(48))
MODEL = sha256(b"ledger/model")
MIN_NODE = c.MIN_STAKE[c.NODE]
MIN_VALIDATOR = c.MIN_STAKE[c.VALIDATOR]
DEFAULTS = LedgerParams.default()
FEE = DEFAULTS.reward + DEFAULTS.verification_fee
WINDOW = DEFAULTS.challenge_window
AUDIT = DEFAULTS.audit_window
VOTES = DEFAULTS.vote_window
EXPIRY = 10_000
"""The expiry round of the tests' job requests: far beyond any test's rounds."""


def pk(key: SigningKey) -> bytes:
    return key.public.raw


def params(**changes: int) -> LedgerParams:
    """Default parameters with every job sampled (p = 100 %), committees of three and a fraud
    slash of 1 000 (so a node at the minimum stake may keep p·S·10 = 10 jobs in flight),
    unless changed."""
    base = {"sample_ppm": PPM, "committee_size": 3, "fraud_slash": 1_000}
    return dataclasses.replace(DEFAULTS, **{**base, **changes})


class Chain:
    """The chain id the message builders sign for: the latest genesis built."""

    id = genesis_chain_id(RegisterBeacon(BEACON_KEY, 0), SetParams(params()))


def chain_of(p: LedgerParams) -> bytes:
    return genesis_chain_id(RegisterBeacon(BEACON_KEY, 0), SetParams(p))


def genesis(p: LedgerParams, nodes: Iterable[SigningKey] = (NODE, OTHER_NODE),
            validators: Iterable[SigningKey] = VALIDATORS) -> list[Event]:
    """Genesis events; the builders below sign for its chain from now on."""
    Chain.id = chain_of(p)
    events: list[Event] = [
        RegisterBeacon(BEACON_KEY, 0),
        SetParams(p),
        Mint(pk(CLIENT), 1_000_000),
        Mint(pk(POOR_CLIENT), 50),
    ]
    for role, keys in ((c.NODE, nodes), (c.VALIDATOR, validators)):
        for key in keys:
            events += [Mint(pk(key), 2 * c.MIN_STAKE[role]), Bond(pk(key), role, c.MIN_STAKE[role])]
    return events


def fold(events: Iterable[Event], state: State | None = None) -> State:
    state = state if state is not None else State()
    for event in events:
        state = apply_event(state, event)
    return state


def beacon(round_number: int, salt: bytes = b"") -> BeaconRound:
    signature = sha256(b"sig" + salt + round_number.to_bytes(8, "big")) * 3  # 96 bytes, like G2
    return BeaconRound(round_number, signature, sha256(signature))


def request(nonce: int, fee: int = FEE, client: SigningKey = CLIENT,
            node: SigningKey = NODE, expiry: int = EXPIRY) -> JobRequest:
    return JobRequest(
        model_id=MODEL,
        input=Tensor("float32", (2,), bytes(8)),
        client=pk(client),
        node=pk(node),
        nonce=nonce,
        fee=fee,
        expiry_round=expiry,
        chain_id=Chain.id,
    ).signed(client)


def unsigned_commitment(req: JobRequest, node: bytes, output: bytes) -> Commitment:
    return Commitment(
        job_id=req.job_id,
        model_id=req.model_id,
        input_hash=sha256(b"input" + req.job_id),
        output_hash=sha256(output + req.job_id),
        node=node,
        chain_id=req.chain_id,
    )


def commit(req: JobRequest, node: SigningKey | None = None, output: bytes = b"right") -> Commitment:
    """The commitment of the node the request names (or of ``node``, which may not answer)."""
    key = node if node is not None else KEY_OF[req.node]
    return unsigned_commitment(req, pk(key), output).signed(key)


def forge(message: Commitment, key: SigningKey) -> Commitment:
    """``message`` signed by ``key`` although it names someone else."""
    return dataclasses.replace(message, signature=key.sign(message.domain(), message.body_bytes()))


def record(req: JobRequest, com: Commitment) -> RecordJob:
    return RecordJob(req.encode(), com.encode())


def attest(key: SigningKey, com: Commitment, verdict: Verdict, round_number: int,
           reason: str = "") -> Attest:
    return Attest(
        Attestation(
            job_id=com.job_id,
            commitment_id=com.content_id,
            validator=pk(key),
            verdict=verdict,
            beacon_round=round_number,
            chain_id=com.chain_id,
            reason=reason,
        ).signed(key).encode()
    )


def mismatch(key: SigningKey, com: Commitment, round_number: int, detail: str = "",
             offence: Offence = Offence.MISMATCH) -> Accuse:
    """MISMATCH evidence (or ``RECORD`` evidence, which names no observed output)."""
    return Accuse(
        Evidence(
            offence=offence,
            job_id=com.job_id,
            accuser=pk(key),
            commitment=com.encode(),
            chain_id=com.chain_id,
            observed_hash=(sha256(b"observed" + com.job_id) if offence is Offence.MISMATCH
                           else b""),
            beacon_round=round_number,
            detail=detail,
        ).signed(key).encode()
    )


def equivocation(key: SigningKey, first: Commitment, second: Commitment) -> Accuse:
    return Accuse(
        Evidence(
            offence=Offence.EQUIVOCATION,
            job_id=first.job_id,
            accuser=pk(key),
            commitment=first.encode(),
            chain_id=first.chain_id,
            conflicting=second.encode(),
        ).signed(key).encode()
    )


class World:
    """A state under test plus the moves a network makes on it."""

    def __init__(self, p: LedgerParams | None = None,
                 validators: Iterable[SigningKey] = VALIDATORS) -> None:
        self.state = fold(genesis(p if p is not None else params(), validators=validators))

    def apply(self, *events: Event) -> None:
        self.state = fold(events, self.state)

    def next_round(self, salt: bytes = b"") -> None:
        self.apply(beacon(self.state.current_round + 1, salt))

    def job(self, nonce: int, node: SigningKey = NODE, output: bytes = b"right",
            fee: int = FEE) -> Commitment:
        req = request(nonce, fee, node=node)
        com = commit(req, output=output)
        self.apply(record(req, com))
        return com

    def refuse(self, event: Event, error: type[Exception], match: str) -> None:
        """The rules refuse ``event`` with ``error`` and leave the state untouched."""
        before = self.state.copy()
        with pytest.raises(error, match=match):
            apply_event(self.state, event)
        assert self.state == before

    def balance(self, key: SigningKey) -> int:
        return self.state.accounts[pk(key)].balance

    def stake(self, key: SigningKey, role: str = c.NODE) -> int:
        return self.state.accounts[pk(key)].stake(role).amount

    def open_dispute(self) -> Dispute:
        (dispute,) = [d for d in self.state.disputes.values() if d.is_open]
        return dispute

    def committee(self) -> list[SigningKey]:
        return [KEY_OF[m] for m in self.open_dispute().committee]

    def auditor(self, com: Commitment) -> SigningKey:
        """The validator the ledger assigned to audit the job now."""
        auditor = self.state.jobs[com.job_id].auditor
        assert auditor is not None, "no auditor's answer is awaited"
        return KEY_OF[auditor]

    def audit(self, com: Commitment, verdict: Verdict = Verdict.VALID) -> None:
        """The assigned auditor attests."""
        job = self.state.jobs[com.job_id]
        assert job.assigned_round is not None
        self.apply(attest(self.auditor(com), com, verdict, job.assigned_round))

    def accuse(self, com: Commitment, key: SigningKey | None = None) -> None:
        """MISMATCH evidence, by the assigned auditor unless ``key`` is given."""
        accuser = key if key is not None else self.auditor(com)
        self.apply(mismatch(accuser, com, self.state.jobs[com.job_id].sample_round))

    def vote(self, com: Commitment, verdicts: Iterable[Verdict],
             members: Iterable[SigningKey] | None = None) -> None:
        """The committee's members (the first of them, or ``members``) vote in order."""
        dispute = self.open_dispute()
        assert dispute.drawn_round is not None
        voters = members if members is not None else self.committee()
        self.apply(*(attest(m, com, v, dispute.drawn_round, reason="vote")
                     for m, v in zip(voters, verdicts, strict=False)))


def is_sampled(state: State, com: Commitment) -> bool:
    job = state.jobs[com.job_id]
    beacon_value = state.beacon_value(job.sample_round)
    assert beacon_value is not None and state.params is not None
    return sampled(beacon_value, job.job_id, job.commitment_id, state.params.sample_ppm)


def find_salt(state: State, wanted: Callable[[State], bool]) -> bytes:
    """A next beacon round for which ``wanted`` holds: in these tests, we are the beacon."""
    for i in range(1000):
        salt = i.to_bytes(2, "big")
        if wanted(apply_event(state, beacon(state.current_round + 1, salt))):
            return salt
    raise AssertionError("no beacon value gives the wanted sample")


# -- Events: canonical bytes and field checks ----------------------------------------------------


def sample_events() -> list[Event]:
    req = request(1)
    com = commit(req)
    return [
        Mint(pk(CLIENT), 5),
        Bond(pk(NODE), c.NODE, MIN_NODE),
        RegisterBeacon(BEACON_KEY, 7),
        SetParams(DEFAULTS),
        record(req, com),
        beacon(3),
        attest(VALIDATORS[0], com, Verdict.VALID, 0),
        mismatch(VALIDATORS[0], com, 0),
        equivocation(VALIDATORS[0], com, commit(req, output=b"other")),
        RegisterZkModel(MODEL, b"vk", b"{}", sha256(b"srs")),
        AccuseInvalidProof(
            Evidence(offence=Offence.INVALID_PROOF, job_id=com.job_id, accuser=pk(VALIDATORS[0]),
                     commitment=com.encode(), chain_id=com.chain_id).signed(VALIDATORS[0]).encode(),
            req.encode(),
        ),
    ]


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.TYPE)
def test_every_event_round_trips_byte_identically(event: Event) -> None:
    data = event.encode()
    assert decode_event(data) == event
    assert type(event).decode(data) == event
    assert decode_event(data).encode() == data
    assert codec.decode(data)["type"] == event.TYPE


def test_every_event_type_has_a_rule() -> None:
    from slashing.rules import PROCESSORS

    assert set(PROCESSORS) == set(EVENT_TYPES.values())


def _value(event: Event) -> dict[str, object]:
    value = codec.decode(event.encode())
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda v: {**v, "type": "nope"}, MalformedMessage, "unknown event type 'nope'"),
        (lambda v: {**v, "v": 1}, UnsupportedVersion, "schema version 1"),
        (lambda v: {k: x for k, x in v.items() if k != "amount"}, MalformedMessage,
         r"missing \['amount'\]"),
        (lambda v: {**v, "extra": 1}, MalformedMessage, r"unknown \['extra'\]"),
        (lambda v: {**v, "amount": 0}, MalformedMessage, "mint.amount must be a positive"),
        (lambda v: {**v, "account": b"short"}, MalformedMessage, "mint.account must be a 32-byte"),
    ],
)
def test_malformed_events_name_the_field(
    change: Callable[[dict[str, object]], dict[str, object]], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode_event(codec.encode(change(_value(Mint(pk(CLIENT), 5)))))


def test_malformed_event_fields_are_refused_at_construction() -> None:
    with pytest.raises(MalformedMessage, match=r"bond\.role must be one of"):
        Bond(pk(NODE), "miner", MIN_NODE)
    with pytest.raises(MalformedMessage, match=r"register_beacon\.public_key must be 48 or 96"):
        RegisterBeacon(b"\x01" * 47, 0)
    with pytest.raises(MalformedMessage, match=r"beacon_round\.randomness must be 32"):
        BeaconRound(1, bytes(96), bytes(31))
    with pytest.raises(MalformedMessage, match=r"record_job\.request is not a well-formed"):
        RecordJob(b"\x01\x02", commit(request(1)).encode())
    with pytest.raises(MalformedMessage, match=r"attest\.attestation is not a well-formed"):
        Attest(commit(request(1)).encode())
    with pytest.raises(MalformedMessage, match=r"'committee_size' must be an integer in 1\.\.101"):
        dataclasses.replace(DEFAULTS, committee_size=0)
    with pytest.raises(MalformedMessage, match=r"set_params.params wrong: missing \['reward'\]"):
        raw = _value(SetParams(DEFAULTS))
        params_map = raw["params"]
        assert isinstance(params_map, dict)
        del params_map["reward"]
        decode_event(codec.encode(raw))
    with pytest.raises(MalformedMessage, match="not valid msgpack"):
        decode_event(b"\xc1")
    with pytest.raises(OversizedMessage):
        decode_event(b"\x00" * (c.MAX_EVENT_BYTES + 1))


# -- Genesis and admin rules ----------------------------------------------------------------------


def test_mint_and_bond() -> None:
    state = fold([Mint(pk(NODE), 3 * MIN_NODE), Bond(pk(NODE), c.NODE, MIN_NODE)])
    account = state.accounts[pk(NODE)]
    assert (account.balance, account.node.amount, state.minted) == (2 * MIN_NODE, MIN_NODE,
                                                                     3 * MIN_NODE)
    state = apply_event(state, Bond(pk(NODE), c.NODE, 1))  # a top-up may be small
    assert state.accounts[pk(NODE)].node.amount == MIN_NODE + 1
    assert state.total_supply() == state.minted


def test_bond_guards() -> None:
    world = World()
    world.refuse(Bond(pk(STRANGER), c.NODE, MIN_NODE), LedgerRuleError, "unknown account")
    world.refuse(Bond(pk(POOR_CLIENT), c.NODE, MIN_NODE), LedgerRuleError,
                 "has balance 50, less than the 10000")
    world.refuse(Bond(pk(CLIENT), c.VALIDATOR, MIN_VALIDATOR - 1), LedgerRuleError,
                 "below the minimum 10000")
    world.refuse(Mint(pk(CLIENT), c.MAX_SUPPLY), LedgerRuleError, "past")


def test_genesis_is_set_once() -> None:
    world = World()
    world.refuse(RegisterBeacon(BEACON_KEY, 0), LedgerRuleError, "already registered")
    world.refuse(SetParams(DEFAULTS), LedgerRuleError, "already set")
    late = fold([RegisterBeacon(BEACON_KEY, 0)])
    with pytest.raises(LedgerRuleError, match="no parameters yet"):
        apply_event(late, beacon(0))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"sample_ppm": 50_000, "compute_cost": 300},
         r"PoSP condition p\(1-r\)\(R\+S\) > C fails: .* <= C = 300; need slash >= 6567"),
        ({"sample_ppm": 50_000, "compute_cost": 1, "fraud_slash": 1_000},
         r"fabrication condition S >= R\(1-p\)/p fails: S = 1000 < .*need slash >= 1900"),
        ({"accuser_share_bps": 9_000}, "accuser share 9000 \\+ committee share 2000 exceeds"),
        ({"fraud_slash": MIN_NODE + 1}, "fraud_slash = 10001 must be positive and at most"),
        ({"false_accusation_slash": 0}, "false_accusation_slash = 0 must be positive"),
        ({"liveness_penalty": 0}, "liveness_penalty = 0 must be positive"),
        ({"accuser_bond": 0}, "accuser_bond must be positive"),
        ({"unbonding_period": 20}, "unbonding_period = 20 rounds is shorter than the 29"),
        ({"sample_ppm": PPM},
         r"stake at risk fails: the minimum stake 10000 covers 2 unsettled jobs"),
    ],
)
def test_unsafe_params_are_refused_with_the_condition_named(
    changes: dict[str, int], match: str
) -> None:
    registered = fold([RegisterBeacon(BEACON_KEY, 0)])
    with pytest.raises(LedgerRuleError, match=match):
        apply_event(registered, SetParams(dataclasses.replace(DEFAULTS, **changes)))


def test_params_come_after_the_beacon_whose_key_the_chain_id_hashes() -> None:
    with pytest.raises(LedgerRuleError, match="RegisterBeacon comes before SetParams"):
        apply_event(State(), SetParams(DEFAULTS))


def test_default_params_are_safe_and_fix_the_chain_id() -> None:
    state = fold([RegisterBeacon(BEACON_KEY, 0), SetParams(DEFAULTS)])
    assert state.params == DEFAULTS
    assert state.chain_id == genesis_chain_id(RegisterBeacon(BEACON_KEY, 0), SetParams(DEFAULTS))
    other = fold([RegisterBeacon(BEACON_KEY, 1), SetParams(DEFAULTS)])
    assert other.chain_id != state.chain_id  # another genesis is another network


# -- Recording jobs -------------------------------------------------------------------------------


def test_record_job_escrows_the_fee() -> None:
    world = World()
    com = world.job(1)
    job = world.state.jobs[com.job_id]
    assert world.balance(CLIENT) == 1_000_000 - FEE
    assert (job.fee, job.node, job.status, job.recorded_round, job.sample_round) == (
        FEE, pk(NODE), JobStatus.PENDING, -1, 0)
    assert world.state.escrow() == FEE
    assert world.state.total_supply() == world.state.minted


def test_record_job_guards() -> None:
    world = World()
    req = request(1)
    com = commit(req)
    forged_request = dataclasses.replace(req, signature=NODE.sign(b"job_request", req.body_bytes()))
    world.refuse(record(forged_request, com), BadSignature, "does not verify")
    world.refuse(record(req, forge(com, OTHER_NODE)), BadSignature, "does not verify")
    other = request(2)
    world.refuse(record(req, commit(other)), LedgerRuleError, "commitment is for job")
    wrong_model = dataclasses.replace(unsigned_commitment(req, pk(NODE), b"x"),
                                      model_id=sha256(b"other")).signed(NODE)
    world.refuse(record(req, wrong_model), LedgerRuleError, "commitment names model")
    client_req = request(3, node=CLIENT)
    world.refuse(record(client_req, commit(client_req)), LedgerRuleError,
                 "is not bonded as a node")
    cheap = request(4, fee=DEFAULTS.verification_fee - 1)
    world.refuse(record(cheap, commit(cheap)), LedgerRuleError, "below the verification fee")
    rich = request(5, fee=FEE + 1)
    world.refuse(record(rich, commit(rich)), LedgerRuleError, "exceeds reward R = 100")
    stranger = request(6, client=STRANGER)
    world.refuse(record(stranger, commit(stranger)), LedgerRuleError, "unknown account")
    poor = request(7, client=POOR_CLIENT)
    world.refuse(record(poor, commit(poor)), LedgerRuleError, "has balance 50, less than the fee")
    world.apply(record(req, com))
    world.refuse(record(req, com), ReplayedMessage, "already recorded")
    world.refuse(record(req, commit(req, OTHER_NODE)), LedgerRuleError,
                 "is for node .* cannot answer it")
    with pytest.raises(LedgerRuleError, match="no parameters yet"):
        apply_event(State(), record(req, com))


ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the Ed25519 base point (RFC 8032, section 5.1)."""
IDENTITY_POINT = (1).to_bytes(32, "little")
"""The encoding of the neutral element, a point of small order (order 1)."""


def test_a_malleated_signature_is_refused() -> None:
    """``S + L`` satisfies the verification equation too; a strict verifier refuses it."""
    world = World()
    req = request(1)
    com = commit(req)
    r, s = req.signature[:32], int.from_bytes(req.signature[32:], "little")
    malleated = dataclasses.replace(req, signature=r + (s + ED25519_ORDER).to_bytes(32, "little"))
    assert malleated.job_id == req.job_id  # the body, and so the job, is the same
    world.refuse(record(malleated, com), BadSignature, "does not verify")
    world.apply(record(req, com))


def test_a_small_order_key_cannot_sign_for_everyone() -> None:
    """Key and R the neutral element with S = 0 pass the bare equation for any message.

    A verifier that skipped the small-order checks would let anyone sign for
    that account; the ledger must refuse such a signature however it arrives.
    """
    forged = IDENTITY_POINT + bytes(32)
    with pytest.raises(BadSignature, match="does not verify"):
        PublicKey(IDENTITY_POINT).verify(b"job_request", b"any payload", forged)
    world = World()
    world.apply(Mint(IDENTITY_POINT, MIN_VALIDATOR))
    bond = Bond(IDENTITY_POINT, c.VALIDATOR, MIN_VALIDATOR, nonce=1, chain_id=Chain.id)
    bond = dataclasses.replace(bond, signature=forged)
    world.refuse(bond, BadSignature, "does not verify")


def test_second_commitment_to_a_job_is_equivocation_slashed_at_once() -> None:
    world = World()
    req = request(1)
    world.apply(record(req, commit(req)))
    burned = world.state.burned
    world.apply(record(req, commit(req, output=b"different")))
    assert world.stake(NODE) == MIN_NODE - DEFAULTS.equivocation_slash
    assert world.state.accounts[pk(NODE)].node.slashed_out
    assert world.state.burned == burned + DEFAULTS.equivocation_slash  # nobody reported it
    assert world.state.jobs[req.job_id].equivocated
    world.refuse(record(req, commit(req, output=b"third")), LedgerRuleError,
                 "already slashed for equivocating")
    world.refuse(record(request(2), commit(request(2))), LedgerRuleError, "slashed out")
    for _ in range(WINDOW + 2):
        world.next_round()
    assert world.state.jobs[req.job_id].status is JobStatus.REFUNDED
    assert world.balance(CLIENT) == 1_000_000
    assert world.state.total_supply() == world.state.minted


# -- The beacon clock ------------------------------------------------------------------------------


def test_beacon_rounds_come_in_order_with_hashed_randomness() -> None:
    world = World()
    assert world.state.current_round == -1
    world.refuse(beacon(1), LedgerRuleError, "beacon round 1 is not the next round 0")
    bad = dataclasses.replace(beacon(0), randomness=sha256(b"chosen"))
    world.refuse(bad, LedgerRuleError, "randomness is not sha256")
    world.next_round()
    assert world.state.current_round == 0
    world.refuse(beacon(0), LedgerRuleError, "is not the next round 1")
    started = fold([RegisterBeacon(BEACON_KEY, 1000), SetParams(DEFAULTS), beacon(1000)])
    assert started.current_round == 1000


# -- Audits: the ledger assigns the auditor ---------------------------------------------------


def test_the_ledger_assigns_each_sampled_job_an_auditor_in_its_sample_round() -> None:
    world = World()
    com = world.job(1)
    assert world.state.jobs[com.job_id].auditors == ()  # not drawn before its round
    world.next_round()
    job = world.state.jobs[com.job_id]
    assert job.sampled and job.audit_pending and len(job.auditors) == 1
    assert job.auditor in {pk(v) for v in VALIDATORS} and job.auditor != pk(NODE)
    assert (job.assigned_round, job.audit_deadline) == (0, AUDIT)
    expected = draw_auditor(world.state.beacon_value(0) or b"", com.job_id, 0,
                            [pk(v) for v in VALIDATORS])
    assert job.auditor == expected  # keyed by the job alone, over the bonded validators


def test_valid_attestation_by_the_auditor_answers_the_audit() -> None:
    world = World()
    com = world.job(1)
    world.next_round()
    auditor = world.auditor(com)
    world.audit(com)
    job = world.state.jobs[com.job_id]
    assert job.verifier == pk(auditor) and not job.audit_pending
    assert job.attestations == ((pk(auditor), Verdict.VALID),)


def test_an_inconclusive_audit_slashes_nobody_and_another_auditor_is_drawn() -> None:
    world = World()
    com = world.job(1)
    world.next_round()
    first = world.auditor(com)
    stakes = {k: a.validator for k, a in world.state.accounts.items()}
    world.audit(com, Verdict.INCONCLUSIVE)
    job = world.state.jobs[com.job_id]
    assert job.verifier is None and job.audit_pending and job.auditor is None
    world.next_round()
    job = world.state.jobs[com.job_id]
    assert len(job.auditors) == 2 and job.auditor != pk(first) and job.assigned_round == 1
    assert {k: a.validator for k, a in world.state.accounts.items()} == stakes


def test_attestation_guards() -> None:
    world = World()
    com = world.job(1)
    world.refuse(attest(VALIDATORS[0], com, Verdict.VALID, 0), LedgerRuleError,
                 "waits for beacon round 0")
    world.next_round()
    v = world.auditor(com)
    other = next(k for k in VALIDATORS if k is not v)
    good = attest(v, com, Verdict.VALID, 0)
    forged = Attestation.decode(good.attestation)
    forged = dataclasses.replace(forged, signature=NODE.sign(forged.domain(), forged.body_bytes()))
    world.refuse(Attest(forged.encode()), BadSignature, "does not verify")
    world.refuse(attest(v, commit(request(99)), Verdict.VALID, 0), LedgerRuleError, "unknown job")
    stale = commit(request(1), output=b"other")
    world.refuse(attest(v, stale, Verdict.VALID, 0), LedgerRuleError, "about commitment")
    world.refuse(attest(v, com, Verdict.VALID, 5), LedgerRuleError,
                 "names beacon round 5; the auditor of job .* was drawn by round 0")
    world.refuse(attest(other, com, Verdict.VALID, 0), NotAssigned,
                 f"validator {pk(other)[:8].hex()} is not assigned to audit job")
    world.refuse(attest(CLIENT, com, Verdict.VALID, 0), NotAssigned, "is not assigned")
    world.refuse(attest(NODE, com, Verdict.VALID, 0), NotAssigned, "is not assigned")
    world.refuse(attest(v, com, Verdict.FRAUD, 0), LedgerRuleError,
                 "must be submitted as MISMATCH")
    world.refuse(Attest(dataclasses.replace(Attestation.decode(good.attestation),
                                            chain_id=sha256(b"another network")).signed(v)
                        .encode()), WrongChain, "signed for chain")
    world.apply(good)
    world.refuse(good, ReplayedMessage, "already recorded")
    world.refuse(attest(v, com, Verdict.INCONCLUSIVE, 0), NotAssigned,
                 "no auditor's answer is awaited")
    for _ in range(WINDOW + 1):
        world.next_round()
    world.refuse(attest(other, com, Verdict.VALID, 0), LedgerRuleError, "already settled")


def test_unsampled_jobs_take_no_attestation_and_no_dispute() -> None:
    world = World(params(sample_ppm=DEFAULTS.sample_ppm, fraud_slash=DEFAULTS.fraud_slash))
    com = world.job(1)
    world.next_round(find_salt(world.state, lambda s: not is_sampled(s, com)))
    assert world.state.jobs[com.job_id].auditors == ()
    world.refuse(attest(VALIDATORS[0], com, Verdict.VALID, 0), NotSampled, "was not sampled")
    world.refuse(mismatch(VALIDATORS[0], com, 0), NotSampled, "was not sampled")


def test_an_unsampled_zk_job_is_assigned_and_pays_its_verifier() -> None:
    """Every zk job's proof is checked whatever the draw: the ledger assigns it an auditor."""
    world = World(params(sample_ppm=DEFAULTS.sample_ppm, fraud_slash=DEFAULTS.fraud_slash))
    plain = world.job(1)  # recorded before its model is registered: not a zk job
    world.apply(RegisterZkModel(MODEL, b"vk", b"{}", sha256(b"srs")))
    zk = world.job(2)
    assert world.state.jobs[zk.job_id].zk and not world.state.jobs[plain.job_id].zk
    world.refuse(attest(VALIDATORS[0], zk, Verdict.VALID, 0), LedgerRuleError,
                 "waits for beacon round")
    world.next_round(find_salt(world.state,
                               lambda s: not is_sampled(s, zk) and not is_sampled(s, plain)))
    world.refuse(attest(VALIDATORS[0], plain, Verdict.VALID, 0), NotSampled, "was not sampled")
    auditor = world.auditor(zk)
    before = world.balance(auditor)
    world.audit(zk)
    assert world.state.jobs[zk.job_id].attestations == ((pk(auditor), Verdict.VALID),)
    # a failing proof is INVALID_PROOF evidence, judged alone: no dispute on an unsampled job
    world.refuse(mismatch(VALIDATORS[1], zk, 0), NotSampled, "was not sampled")
    for _ in range(WINDOW + 1):
        world.next_round()
    assert world.state.jobs[zk.job_id].status is JobStatus.SETTLED
    assert world.balance(auditor) == before + DEFAULTS.verification_fee


# -- Missed deadlines: the liveness penalty --------------------------------------------------------


def test_a_silent_auditor_pays_the_liveness_penalty_and_is_replaced() -> None:
    world = World()
    com = world.job(1)
    world.next_round()
    silent = world.auditor(com)
    for _ in range(AUDIT):
        world.next_round()
    assert world.state.jobs[com.job_id].auditor == pk(silent)  # in time up to its deadline
    burned = world.state.burned
    world.next_round()  # round AUDIT + 1: the deadline has passed
    job = world.state.jobs[com.job_id]
    penalty = DEFAULTS.liveness_penalty
    assert world.stake(silent, c.VALIDATOR) == MIN_VALIDATOR - penalty
    assert world.state.burned == burned + penalty
    account = world.state.accounts[pk(silent)].validator
    assert account.offences == 0 and not account.slashed_out  # not an offence: no tombstone
    assert not is_bonded_validator(world.state, pk(silent))  # below the minimum, and jailed
    assert len(job.auditors) == 2 and job.auditor != pk(silent)
    assert job.assigned_round == AUDIT + 1
    world.refuse(attest(silent, com, Verdict.VALID, 0), NotAssigned, "is not assigned")
    world.audit(com)
    assert not world.state.jobs[com.job_id].audit_pending
    world.apply(Bond(pk(silent), c.VALIDATOR, penalty))  # topped up, it may act once released
    assert world.stake(silent, c.VALIDATOR) == MIN_VALIDATOR


def test_a_job_whose_auditors_all_stay_silent_settles_after_the_last_draw() -> None:
    world = World()
    com = world.job(1)
    world.next_round()
    for _ in range(c.MAX_AUDIT_DRAWS * (AUDIT + 1)):
        world.next_round()
    job = world.state.jobs[com.job_id]
    assert len(job.auditors) == c.MAX_AUDIT_DRAWS and not job.audit_pending
    assert world.state.counters.audits_unanswered == 1
    assert world.state.counters.liveness_penalties == c.MAX_AUDIT_DRAWS
    world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED
    assert world.state.total_supply() == world.state.minted


# -- Settlement ------------------------------------------------------------------------------------


def test_honest_settled_job_locks_the_reward_and_pays_the_auditor() -> None:
    world = World()
    com = world.job(1)
    node_before = world.balance(NODE)
    world.next_round()
    auditor = world.auditor(com)
    validator_before = world.balance(auditor)
    world.audit(com)
    for _ in range(WINDOW):
        world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.PENDING  # window still open
    world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED
    settled = world.state.current_round
    account = world.state.accounts[pk(NODE)]
    reward = FEE - DEFAULTS.verification_fee
    assert account.balance == node_before and account.locked == (
        (settled + DEFAULTS.unbonding_period, reward),)
    assert world.balance(auditor) == validator_before + DEFAULTS.verification_fee
    assert world.state.escrow() == 0 and world.state.node_jobs == {}
    assert world.state.total_supply() == world.state.minted
    while world.state.current_round < settled + DEFAULTS.unbonding_period:
        world.next_round()
    account = world.state.accounts[pk(NODE)]
    assert account.balance == node_before + reward and account.locked == ()


def test_unattested_job_settles_and_returns_the_verification_fee() -> None:
    world = World(params(sample_ppm=DEFAULTS.sample_ppm, fraud_slash=DEFAULTS.fraud_slash))
    com = world.job(1)
    world.next_round(find_salt(world.state, lambda s: not is_sampled(s, com)))
    for _ in range(WINDOW + 1):
        world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED
    assert world.state.accounts[pk(NODE)].locked_total == DEFAULTS.reward
    assert world.balance(CLIENT) == 1_000_000 - DEFAULTS.reward


# -- Accusations -----------------------------------------------------------------------------------


def test_equivocation_evidence_alone_slashes_and_rewards_the_reporter() -> None:
    world = World()
    req = request(1)
    first, second = commit(req), commit(req, output=b"second")
    reporter = VALIDATORS[0]
    before = world.balance(reporter)
    world.apply(equivocation(reporter, first, second))  # the job was never even recorded
    slash = DEFAULTS.equivocation_slash
    share = slash * DEFAULTS.reporter_share_bps // c.BPS
    assert world.stake(NODE) == MIN_NODE - slash
    assert world.balance(reporter) == before + share
    assert world.state.burned == slash - share
    world.refuse(equivocation(VALIDATORS[1], first, second), LedgerRuleError,
                 "already slashed for equivocating")
    world.refuse(record(req, first), LedgerRuleError, "already slashed for equivocating")
    assert world.state.total_supply() == world.state.minted


def test_equivocation_evidence_guards() -> None:
    world = World()
    req = request(1)
    first, second = commit(req), commit(req, output=b"second")
    world.refuse(equivocation(CLIENT, first, second), LedgerRuleError, "not bonded as a validator")
    forged_second = forge(unsigned_commitment(req, pk(NODE), b"second"), OTHER_NODE)
    world.refuse(equivocation(VALIDATORS[0], first, forged_second), BadSignature, "does not verify")
    forged_first = forge(unsigned_commitment(req, pk(NODE), b"first"), OTHER_NODE)
    world.refuse(equivocation(VALIDATORS[0], forged_first, second), BadSignature, "does not verify")
    stranger_req = request(2)
    world.refuse(
        equivocation(VALIDATORS[0], commit(stranger_req, STRANGER),
                     commit(stranger_req, STRANGER, b"2")),
        LedgerRuleError, "has no account",
    )
    world.apply(Mint(pk(VALIDATORS[0]), MIN_NODE), Bond(pk(VALIDATORS[0]), c.NODE, MIN_NODE))
    own_req = request(3)
    world.refuse(
        equivocation(VALIDATORS[0], commit(own_req, VALIDATORS[0]),
                     commit(own_req, VALIDATORS[0], b"2")),
        LedgerRuleError, "cannot accuse itself",
    )
    invalid_proof = Accuse(
        Evidence(offence=Offence.INVALID_PROOF, job_id=req.job_id, accuser=pk(VALIDATORS[1]),
                 commitment=first.encode(), chain_id=first.chain_id).signed(VALIDATORS[1]).encode()
    )
    world.refuse(invalid_proof, LedgerRuleError, "judged with the job's request")


def dispute_world(output: bytes, validators: Iterable[SigningKey] = VALIDATORS,
                  ) -> tuple[World, Commitment, SigningKey]:
    """A sampled job, accused by its auditor; its committee is drawn in the next round."""
    world = World(validators=validators)
    com = world.job(1, output=output)
    world.next_round()
    accuser = world.auditor(com)
    world.accuse(com)
    return world, com, accuser


def test_a_dispute_draws_its_committee_from_a_round_revealed_after_it_opened() -> None:
    world, com, accuser = dispute_world(b"wrong")
    dispute = world.open_dispute()
    assert dispute.committee == () and dispute.drawn_round is None  # nothing to foresee yet
    assert dispute.opened_round == 0 and dispute.accusers == (pk(accuser),)
    world.next_round()
    dispute = world.open_dispute()
    assert dispute.drawn_round == 1 and len(dispute.committee) == params().committee_size
    assert pk(accuser) not in dispute.committee and pk(NODE) not in dispute.committee
    candidates = [pk(v) for v in VALIDATORS if v is not accuser]
    assert dispute.committee == draw_dispute_committee(
        world.state.beacon_value(1) or b"", com.job_id, 0, candidates, 3)
    assert world.state.jobs[com.job_id].dispute == dispute.dispute_id


def test_the_committee_is_the_same_whoever_accuses_first_and_however_it_is_worded() -> None:
    """Keyed by the job alone: which key opens the dispute, and its words, choose nothing."""
    committees = set()
    for opener_first, detail in ((True, ""), (False, "logits differ"), (True, "see attached")):
        world = World(validators=(*VALIDATORS, *EXTRA_VALIDATORS))
        com = world.job(1, output=b"wrong")
        world.next_round()
        auditor = world.auditor(com)
        other = next(v for v in VALIDATORS if v is not auditor)
        order = (other, auditor) if opener_first else (auditor, other)
        world.apply(mismatch(order[0], com, 0, detail), mismatch(order[1], com, 0))
        assert len(world.state.disputes) == 1  # one dispute per job: the second accuser joins
        world.next_round()
        committees.add(world.open_dispute().committee)
    assert len(committees) == 1


def test_majority_fraud_slashes_the_node_and_rewards_accusers_and_committee() -> None:
    world, com, accuser = dispute_world(b"wrong")
    world.next_round()
    a, b, third = world.committee()
    balances = {k: world.balance(k) for k in (CLIENT, accuser, a, b, third)}
    burned = world.state.burned
    world.vote(com, (Verdict.FRAUD, Verdict.FRAUD))
    assert world.open_dispute().votes  # open until all k voted or the window passes
    world.vote(com, (Verdict.VALID,), members=[third])
    slash = params().fraud_slash
    to_accuser = slash * DEFAULTS.accuser_share_bps // c.BPS
    to_each_member = slash * DEFAULTS.committee_share_bps // c.BPS // 2
    assert world.stake(NODE) == MIN_NODE - slash
    assert world.state.accounts[pk(NODE)].node.slashed_out
    assert world.balance(accuser) == balances[accuser] + to_accuser + DEFAULTS.accuser_bond
    assert world.balance(a) == balances[a] + to_each_member
    assert world.balance(b) == balances[b] + to_each_member
    assert world.balance(third) == balances[third]
    # the member that called a confirmed fraud VALID is slashed as lazy, all of it burned
    lazy = DEFAULTS.lazy_validator_slash
    assert world.stake(third, c.VALIDATOR) == MIN_VALIDATOR - lazy
    assert world.state.burned == burned + slash - to_accuser - 2 * to_each_member + lazy
    assert world.balance(CLIENT) == balances[CLIENT] + FEE  # refunded
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED
    (dispute,) = world.state.disputes.values()
    assert dispute.outcome is Verdict.FRAUD
    assert world.state.total_supply() == world.state.minted


def test_majority_valid_slashes_the_accuser_and_takes_its_bond() -> None:
    world, com, accuser = dispute_world(b"right")
    world.next_round()
    members = world.committee()
    node_balance, burned = world.balance(NODE), world.state.burned
    accuser_balance = world.balance(accuser)
    world.vote(com, (Verdict.VALID,) * 3)
    slash, bond = DEFAULTS.false_accusation_slash, DEFAULTS.accuser_bond
    to_node = (slash + bond) * DEFAULTS.wronged_node_share_bps // c.BPS
    to_each_member = (slash + bond) * DEFAULTS.committee_share_bps // c.BPS // len(members)
    assert world.stake(accuser, c.VALIDATOR) == MIN_VALIDATOR - slash
    assert world.balance(accuser) == accuser_balance  # the bond is not returned
    assert world.stake(NODE) == MIN_NODE
    assert world.balance(NODE) == node_balance + to_node
    assert world.state.burned == burned + slash + bond - to_node - 3 * to_each_member
    for _ in range(WINDOW + 1):
        world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED  # the node is paid after all
    assert world.state.total_supply() == world.state.minted


def test_a_committee_without_a_majority_is_drawn_again_and_never_quietly_inconclusive() -> None:
    world, com, _ = dispute_world(b"wrong")
    world.next_round()
    first = world.committee()
    world.vote(com, (Verdict.FRAUD, Verdict.INCONCLUSIVE, Verdict.VALID))  # all voted: no majority
    assert world.open_dispute().drawn_round is None
    world.next_round()
    dispute = world.open_dispute()
    assert dispute.draws == 2 and dispute.drawn_round == world.state.current_round
    assert world.state.counters.committee_redraws == 1
    assert world.committee() != first or dispute.votes == ()
    world.vote(com, (Verdict.FRAUD,) * 3)
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED


def test_silent_members_pay_the_liveness_penalty_and_the_committee_is_redrawn() -> None:
    world, _, _ = dispute_world(b"wrong", (*VALIDATORS, *EXTRA_VALIDATORS))
    world.next_round()
    silent = world.committee()
    for _ in range(VOTES + 1):
        world.next_round()  # the vote window closes with no vote
    dispute = world.open_dispute()
    assert dispute.draws == 2 and dispute.outcome is None  # not INCONCLUSIVE: drawn again
    for member in silent:
        assert world.stake(member, c.VALIDATOR) == MIN_VALIDATOR - DEFAULTS.liveness_penalty
        assert pk(member) not in dispute.committee  # jailed: not drawn again
    assert world.state.counters.liveness_penalties == 3


@pytest.mark.parametrize(
    "verdicts",
    [
        (Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE),
        (Verdict.FRAUD, Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE),
        (Verdict.FRAUD, Verdict.VALID, Verdict.INCONCLUSIVE),
    ],
    ids=["all-inconclusive", "inconclusive-majority", "no-majority"],
)
def test_inconclusive_disputes_never_slash(verdicts: tuple[Verdict, ...]) -> None:
    """After the last committee without a majority the dispute is INCONCLUSIVE: bonds return."""
    world = World(validators=(*VALIDATORS, *EXTRA_VALIDATORS))
    com = world.job(1, output=b"wrong")
    world.next_round()
    accuser = world.auditor(com)
    world.accuse(com)
    accuser_balance = world.balance(accuser)
    stakes_before = {k: (a.node, a.validator) for k, a in world.state.accounts.items()}
    burned = world.state.burned
    for _ in range(c.MAX_COMMITTEE_DRAWS):
        world.next_round()
        world.vote(com, verdicts)
    (dispute,) = world.state.disputes.values()
    assert dispute.outcome is Verdict.INCONCLUSIVE and dispute.draws == c.MAX_COMMITTEE_DRAWS
    assert {k: (a.node, a.validator) for k, a in world.state.accounts.items()} == stakes_before
    assert world.state.burned == burned
    assert world.balance(accuser) == accuser_balance + DEFAULTS.accuser_bond
    for _ in range(WINDOW + 1):
        world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED


def test_dispute_guards() -> None:
    world, com, accuser = dispute_world(b"wrong")
    world.refuse(attest(VALIDATORS[0], com, Verdict.FRAUD, 0), LedgerRuleError,
                 "must be submitted as MISMATCH")
    world.next_round()
    members = world.committee()
    outsider = next(v for v in VALIDATORS if v not in members and v is not accuser)
    world.refuse(attest(outsider, com, Verdict.FRAUD, 1), NotOnCommittee, "not on the committee")
    world.refuse(attest(accuser, com, Verdict.FRAUD, 1), NotOnCommittee, "not on the committee")
    world.refuse(attest(members[0], com, Verdict.FRAUD, 0), LedgerRuleError,
                 "names beacon round 1, which drew its committee; got 0")
    vote = attest(members[0], com, Verdict.FRAUD, 1)
    world.apply(vote)
    world.refuse(vote, ReplayedMessage, "already recorded")
    world.refuse(attest(members[0], com, Verdict.VALID, 1), LedgerRuleError, "already voted")
    world.refuse(mismatch(members[1], com, 0), LedgerRuleError, "sits on the committee")
    other_net = sha256(b"another network")
    foreign = forge(dataclasses.replace(com, chain_id=other_net), NODE)
    elsewhere = dataclasses.replace(Evidence.decode(mismatch(outsider, com, 0).evidence),
                                    chain_id=other_net, commitment=foreign.encode())
    world.refuse(Accuse(elsewhere.signed(outsider).encode()), WrongChain, "signed for chain")
    world.refuse(mismatch(accuser, com, 0), ReplayedMessage, "already recorded")


def test_any_validator_may_join_an_open_dispute_even_past_the_window() -> None:
    """An early accusation shields nothing: later accusers join the job's one dispute."""
    world = World(validators=(*VALIDATORS, *EXTRA_VALIDATORS))
    com = world.job(1, output=b"wrong")
    world.next_round()
    first = next(v for v in VALIDATORS if pk(v) != world.state.jobs[com.job_id].auditor)
    world.apply(mismatch(first, com, 0))
    auditor = world.auditor(com)
    for _ in range(WINDOW + 1):
        world.next_round()  # past the challenge window: the dispute is still open
    members = world.committee()
    joiner = next(v for v in (*VALIDATORS, *EXTRA_VALIDATORS)
                  if v not in members and v is not first and v is not auditor
                  and is_bonded_validator(world.state, pk(v)))
    world.apply(mismatch(joiner, com, 0))
    dispute = world.open_dispute()
    assert dispute.accusers == (pk(first), pk(joiner)) and len(world.state.disputes) == 1
    assert world.state.escrow() == FEE + 2 * DEFAULTS.accuser_bond


def test_mismatch_guards() -> None:
    world = World()
    com = world.job(1)
    v = VALIDATORS[0]
    world.refuse(mismatch(v, com, 0), NotSampled, "was not sampled")
    world.next_round()
    world.refuse(mismatch(v, commit(request(9)), 0), LedgerRuleError, "unknown job")
    world.refuse(mismatch(v, commit(request(1), output=b"x"), 0), LedgerRuleError,
                 "evidence accuses commitment")
    world.refuse(mismatch(v, com, 3), LedgerRuleError, "names beacon round 3")
    same = Accuse(
        Evidence(offence=Offence.MISMATCH, job_id=com.job_id, accuser=pk(v),
                 commitment=com.encode(), chain_id=com.chain_id, observed_hash=com.output_hash,
                 beacon_round=0).signed(v).encode()
    )
    world.refuse(same, LedgerRuleError, "same output hash")
    world.apply(Mint(pk(STRANGER), MIN_VALIDATOR), Bond(pk(STRANGER), c.VALIDATOR, MIN_VALIDATOR))
    world.refuse(mismatch(STRANGER, com, 0), InsufficientFunds, "less than the accuser bond")
    small = World(validators=VALIDATORS[:3])
    small_com = small.job(1)
    small.next_round()
    small.refuse(mismatch(small.auditor(small_com), small_com, 0), LedgerRuleError,
                 "a committee needs 3 validators .* 2 are bonded")
    world.audit(com)
    for _ in range(WINDOW + 1):
        world.next_round()
    world.refuse(mismatch(v, com, 0), LedgerRuleError, "already settled")


def test_a_job_has_one_dispute() -> None:
    world, com, accuser = dispute_world(b"right")
    world.next_round()
    world.vote(com, (Verdict.INCONCLUSIVE,) * 3)
    world.next_round()
    world.vote(com, (Verdict.VALID,) * 3)
    late = next(v for v in VALIDATORS if v is not accuser and pk(v) not in
                world.state.disputes[world.state.jobs[com.job_id].dispute or b""].committee)
    world.refuse(mismatch(late, com, 0), LedgerRuleError, "dispute was decided VALID")


def test_an_earlier_attestation_cannot_be_replayed_as_a_vote() -> None:
    world, com, _ = dispute_world(b"wrong")
    world.next_round()
    members = world.committee()
    earlier = attest(members[0], com, Verdict.FRAUD, 1, reason="vote")
    world.apply(earlier)
    world.refuse(earlier, ReplayedMessage, "already recorded")


def test_a_dispute_holds_the_job_past_its_challenge_window() -> None:
    world = World()
    com = world.job(1, output=b"wrong")
    world.next_round()
    world.audit(com)  # a lazy VALID
    for _ in range(WINDOW):
        world.next_round()  # rounds 1..WINDOW: the window's last round
    world.apply(mismatch(next(v for v in VALIDATORS if pk(v) != world.state.jobs[
        com.job_id].verifier), com, 0))
    world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.PENDING  # held by the dispute
    world.vote(com, (Verdict.FRAUD,) * 3)
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED


def test_apply_event_never_changes_its_input() -> None:
    world = World()
    before = world.state.copy()
    after = apply_event(world.state, record(request(1), commit(request(1))))
    assert world.state == before and after != before


# -- The SQLite store ------------------------------------------------------------------------------


def scenario() -> list[Event]:
    """Genesis, a settled honest job, a confirmed fraud and an equivocation."""
    p = params()
    events = genesis(p)
    honest_req, cheat_req, equiv_req = request(1), request(2, node=OTHER_NODE), request(3)
    honest, cheat = commit(honest_req), commit(cheat_req, output=b"wrong")
    events += [record(honest_req, honest), record(cheat_req, cheat),
               record(equiv_req, commit(equiv_req)), beacon(0)]
    state = fold(events)
    auditor = {com.job_id: KEY_OF[state.jobs[com.job_id].auditors[0]] for com in (honest, cheat)}
    events += [attest(auditor[honest.job_id], honest, Verdict.VALID, 0),
               mismatch(auditor[cheat.job_id], cheat, 0), beacon(1)]
    (dispute,) = fold(events).disputes.values()
    events += [attest(KEY_OF[m], cheat, Verdict.FRAUD, 1) for m in dispute.committee]
    events += [record(equiv_req, commit(equiv_req, output=b"other"))]
    events += [beacon(r) for r in range(2, WINDOW + 2)]
    return events


def fill(path: Path, events: Iterable[Event]) -> Ledger:
    ledger = Ledger.open(path)
    for event in events:
        ledger.append(event)
    return ledger


def test_reopening_rebuilds_an_identical_state(tmp_path: Path) -> None:
    events = scenario()
    path = tmp_path / "ledger.db"
    with fill(path, events) as ledger:
        state, length, head = ledger.state, ledger.length, ledger.head_hash
        assert ledger.verify() == len(events)
    assert state == fold(events)
    assert state.counters.jobs_settled == 1 and state.counters.disputes_fraud == 1
    with Ledger.open(path) as reopened:
        assert reopened.state == state
        assert (reopened.length, reopened.head_hash) == (length, head)
        assert [e.event for e in reopened.events()] == events
        assert reopened.verify() == len(events)


def test_the_log_is_hash_chained_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    fill(path, genesis(params())).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    prev = c.GENESIS_PREV_HASH
    for prev_hash, digest, data in db.execute(
        "SELECT prev_hash, hash, event FROM events ORDER BY seq"
    ):
        assert prev_hash == prev and digest == sha256(prev + data) == chain_hash(prev, data)
        assert decode_event(data).encode() == data
        prev = digest
    db.close()


def test_history_lists_the_events_that_touch_an_account(tmp_path: Path) -> None:
    with fill(tmp_path / "ledger.db", scenario()) as ledger:
        node_history = [e.event for e in ledger.history(pk(NODE))]
        assert isinstance(node_history[0], Mint) and isinstance(node_history[1], Bond)
        assert sum(isinstance(e, RecordJob) for e in node_history) == 3
        assert isinstance(node_history[-1], BeaconRound)  # the settlement that paid it
        seqs = [e.seq for e in ledger.history(pk(NODE))]
        assert seqs == sorted(set(seqs))
        assert ledger.history(pk(STRANGER)) == []


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir()
            if p.name in (path.name, path.name + "-wal")}


def _unsampled_job_world() -> tuple[list[Event], Commitment, Commitment]:
    """Genesis at p = 50 %, one job sampled and one not, and a dispute open on the first,
    its committee drawn."""
    events = genesis(params(sample_ppm=PPM // 2, fraud_slash=500),
                     validators=(*VALIDATORS, *EXTRA_VALIDATORS[:2]))
    hit_req, miss_req = request(1), request(2)
    hit, miss = commit(hit_req, output=b"wrong"), commit(miss_req)
    events += [record(hit_req, hit), record(miss_req, miss)]
    salt = find_salt(fold(events), lambda s: is_sampled(s, hit) and not is_sampled(s, miss))
    events += [beacon(0, salt), mismatch(VALIDATORS[0], hit, 0), beacon(1)]
    return events, hit, miss


def _non_member_vote(state: State, hit: Commitment, miss: Commitment) -> Event:
    (dispute,) = state.disputes.values()
    job = state.jobs[hit.job_id]
    outsider = next(v for v in VALIDATORS[1:]
                    if pk(v) not in dispute.committee and pk(v) != job.auditor)
    return attest(outsider, hit, Verdict.FRAUD, 1)


Attempt = Callable[[State, Commitment, Commitment], Event]
REJECTED: dict[str, tuple[Attempt, type[ProtocolError], str]] = {
    "bad signature": (lambda state, hit, miss: record(
        request(9), forge(unsigned_commitment(request(9), pk(NODE), b"x"), OTHER_NODE)),
        BadSignature, "does not verify"),
    "malformed bytes": (lambda state, hit, miss: decode_event(b"\x81\xa4type\xa3nop"),
                        MalformedMessage, "unknown event type 'nop'"),
    "malformed embedded message": (lambda state, hit, miss: RecordJob(
        b"\x90", commit(request(9)).encode()), MalformedMessage, "not a well-formed job_request"),
    "unknown account": (lambda state, hit, miss: Bond(pk(STRANGER), c.NODE, MIN_NODE),
                        LedgerRuleError, "unknown account"),
    "insufficient balance": (lambda state, hit, miss: record(
        request(9, client=POOR_CLIENT), commit(request(9, client=POOR_CLIENT))),
        LedgerRuleError, "has balance 50, less than the fee"),
    "unsampled job attestation": (lambda state, hit, miss: attest(
        VALIDATORS[1], miss, Verdict.VALID, 0), LedgerRuleError, "was not sampled"),
    "non-member vote": (_non_member_vote, LedgerRuleError, "not on the committee"),
    "replayed commitment": (lambda state, hit, miss: record(request(1), hit),
                            ReplayedMessage, "already recorded"),
    "skipped beacon round": (lambda state, hit, miss: beacon(5),
                             LedgerRuleError, "not the next round 2"),
}


@pytest.mark.parametrize("attempt", list(REJECTED), ids=list(REJECTED))
def test_a_rejected_event_leaves_state_and_file_untouched(tmp_path: Path, attempt: str) -> None:
    events, hit, miss = _unsampled_job_world()
    make, error, match = REJECTED[attempt]
    path = tmp_path / "ledger.db"
    with fill(path, events) as ledger:
        state, length, files = ledger.state, ledger.length, _files(path)
        with pytest.raises(error, match=match):
            ledger.append(make(ledger.state, hit, miss))
        assert ledger.state == state and ledger.length == length
        assert _files(path) == files
        assert ledger.verify() == length
    with Ledger.open(path) as reopened:
        assert reopened.state == state


def test_a_tampered_row_is_detected_and_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    fill(path, genesis(params())).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE events SET event = ? WHERE seq = 3", (Mint(pk(CLIENT), 2_000_000).encode(),))
    db.commit()
    db.close()
    with pytest.raises(LedgerCorrupt, match="row seq 3: hash does not match"):
        Ledger.open(path)


def test_a_missing_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    fill(path, genesis(params())).close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM events WHERE seq = 4")
    db.commit()
    db.close()
    with pytest.raises(LedgerCorrupt, match="row seq 5: expected seq 4"):
        Ledger.open(path)


def test_a_rewritten_chain_must_still_pass_the_rules(tmp_path: Path) -> None:
    """Rehashing a forged log makes the chain consistent, but the fold refuses the event."""
    path = tmp_path / "ledger.db"
    events = [*genesis(params()), beacon(0), beacon(0)]
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, "
               "hash BLOB NOT NULL, event BLOB NOT NULL)")
    prev = c.GENESIS_PREV_HASH
    for seq, event in enumerate(events, start=1):
        data = event.encode()
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (seq, prev, chain_hash(prev, data),
                                                             data))
        prev = chain_hash(prev, data)
    db.commit()
    db.close()
    with pytest.raises(LedgerCorrupt, match=f"row seq {len(events)}: the rules refuse"):
        Ledger.open(path)


def test_a_second_writer_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as first, Ledger.open(path) as second:
        first.append(Mint(pk(CLIENT), 1))
        with pytest.raises(LedgerCorrupt, match="another process wrote to it"):
            second.append(Mint(pk(CLIENT), 2))
        assert second.length == 0


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(LedgerCorrupt, match="is not a ledger database"):
        Ledger.open(path)


# -- A stateful adversary --------------------------------------------------------------------------

HONEST_NODES = (NODE, OTHER_NODE)
MACHINE_VALIDATORS = (*VALIDATORS, EXTRA_VALIDATOR)
MACHINE_ACCOUNTS = (CLIENT, POOR_CLIENT, *HONEST_NODES, CHEATER, *MACHINE_VALIDATORS, STRANGER)
MACHINE_PARAMS = params(sample_ppm=PPM // 2, challenge_window=2, availability_window=1,
                        audit_window=1, vote_window=1, unbonding_period=18, jail_period=2)
LAZY_VALIDATORS = MACHINE_VALIDATORS[-2:]
"""Validators that, when assigned, may attest VALID without re-executing."""
MACHINE_ZK_MODEL = sha256(b"ledger/machine-zk-model")
MACHINE_ZK_KEYS = RegisterZkModel(MACHINE_ZK_MODEL, b"machine vk", b"{}", sha256(b"machine srs"))
GOOD_PROOF = b"proof that holds"


def machine_proof_checker(vk: bytes, settings: bytes, srs: bytes, req: JobRequest,
                          com: Commitment) -> str | None:
    """A fake but deterministic zk check: the proof holds when it is GOOD_PROOF."""
    assert vk == MACHINE_ZK_KEYS.verifying_key
    return None if com.aux == GOOD_PROOF else "proof does not verify"


def zk_job(nonce: int, node: SigningKey, forged: bool) -> tuple[JobRequest, Commitment]:
    req = JobRequest(model_id=MACHINE_ZK_MODEL, input=Tensor("float32", (2,), bytes(8)),
                     client=pk(CLIENT), node=pk(node), nonce=nonce, fee=FEE,
                     expiry_round=EXPIRY, chain_id=Chain.id).signed(CLIENT)
    com = dataclasses.replace(
        unsigned_commitment(req, pk(node), b"wrong" if forged else b"right"),
        mode="zk", aux=b"forged proof" if forged else GOOD_PROOF,
    ).signed(node)
    return req, com


def invalid_proof(key: SigningKey, req: JobRequest, com: Commitment,
                  detail: str = "") -> AccuseInvalidProof:
    evidence = Evidence(offence=Offence.INVALID_PROOF, job_id=com.job_id, accuser=pk(key),
                        commitment=com.encode(), chain_id=com.chain_id, detail=detail).signed(key)
    return AccuseInvalidProof(evidence.encode(), req.encode())


class LedgerMachine(RuleBasedStateMachine):
    """Random events, valid and not, from honest nodes, a cheating node and lying accusers.

    Validators attest and vote truthfully or INCONCLUSIVE (or not at all) but
    accuse anyone, and some attest VALID without checking; the cheater commits
    wrong outputs, equivocates, forges evidence against honest nodes, withholds
    its outputs, and unbonds and withdraws with signed transactions (nonces
    right and wrong); the operator plants canaries; anyone replays what was
    accepted and re-submits evidence for offences already punished. Laws:
    tokens are conserved, nothing goes negative, no honest node and no
    validator that never lied loses stake, a refused event changes nothing, no
    offence is punished twice, no unbonding stake leaves while an offence
    committed when it was bonded can still be proven, and the accepted log
    replays to the same state hash.
    """

    def __init__(self) -> None:
        super().__init__()
        genesis_events = [
            *genesis(MACHINE_PARAMS, nodes=(*HONEST_NODES, CHEATER, CANARY_NODE),
                     validators=MACHINE_VALIDATORS),
            Mint(pk(CHEATER), 5 * MIN_NODE), Bond(pk(CHEATER), c.NODE, 5 * MIN_NODE),
            MACHINE_ZK_KEYS,
            *(e for v in MACHINE_VALIDATORS
              for e in (Mint(pk(v), MIN_VALIDATOR), Bond(pk(v), c.VALIDATOR, MIN_VALIDATOR))),
        ]  # the cheater can afford several slashes before it is slashed out; validators can
        # pay a few liveness penalties and post accuser bonds
        self.previous_checker = install_proof_checker(machine_proof_checker)
        self.state = fold(genesis_events)
        self.log: list[Event] = list(genesis_events)
        self.jobs: dict[bytes, tuple[JobRequest, Commitment, bool]] = {}
        """job id → request, recorded commitment, and whether its output is right."""
        self.replayable: list[Event] = []
        self.nonce = 0
        self.floor = {pk(k): self.state.accounts[pk(k)].node.amount for k in HONEST_NODES}
        self.validator_floor = {pk(k): 2 * MIN_VALIDATOR for k in MACHINE_VALIDATORS}
        self.liars: set[bytes] = set()
        """Validators that accused a right output or called a wrong one VALID."""
        self.canaries: dict[bytes, list[bytes]] = {}
        """canary job id → the salts planted for it (two: the second must never slash again)."""
        self.punished: list[Event] = []
        """Accepted events that punished someone, to re-submit in other words."""

    def submit(self, event: Event) -> ProtocolError | None:
        """Apply ``event``; return the error that refused it (and check it changed nothing)."""
        before = self.state.copy()
        try:
            after = apply_event(self.state, event)
        except ProtocolError as exc:
            assert self.state == before
            return exc
        assert self.state == before
        if after.counters.slashings > before.counters.slashings:
            self.punished.append(event)
        self.state = after
        self.log.append(event)
        if isinstance(event, (RecordJob, Attest, Accuse)):
            self.replayable.append(event)
        return None

    def accepted(self, event: Event) -> bool:
        return self.submit(event) is None

    def revealed_jobs(self, data: st.DataObject) -> list[bytes]:
        """Pending jobs whose sample round is revealed; mostly only the sampled ones."""
        revealed = [j.job_id for j in self.state.jobs.values()
                    if j.status is JobStatus.PENDING and j.sample_round <= self.state.current_round]
        if data.draw(st.sampled_from((True, True, False)), label="sampled only"):
            return [job_id for job_id in revealed if is_sampled(self.state, self.jobs[job_id][1])]
        return revealed

    def has_revealed_jobs(self) -> bool:
        return any(j.status is JobStatus.PENDING and j.sample_round <= self.state.current_round
                   for j in self.state.jobs.values())

    def truth(self, job_id: bytes) -> Verdict:
        return Verdict.VALID if self.jobs[job_id][2] else Verdict.FRAUD

    @initialize(cheats=st.lists(st.booleans(), min_size=1, max_size=4))
    def first_jobs(self, cheats: list[bool]) -> None:
        for cheat in cheats:
            self.record_job(CLIENT, CHEATER if cheat else NODE, FEE, cheat)
        self.beacon_round(b"", 1)

    @rule(client=st.sampled_from((CLIENT, CLIENT, CLIENT, POOR_CLIENT, STRANGER)),
          node=st.sampled_from((*HONEST_NODES, CHEATER)),
          fee=st.sampled_from((FEE, FEE, FEE, 50, 0, FEE + 1)), cheat=st.booleans())
    def record_job(self, client: SigningKey, node: SigningKey, fee: int, cheat: bool) -> None:
        self.nonce += 1
        req = request(self.nonce, fee, client)
        wrong = cheat and node is CHEATER
        com = commit(req, node, b"wrong" if wrong else b"right")
        if self.accepted(record(req, com)):
            self.jobs[req.job_id] = (req, com, not wrong)

    @rule(node=st.sampled_from((*HONEST_NODES, CHEATER)), forged=st.booleans())
    def record_zk_job(self, node: SigningKey, forged: bool) -> None:
        """A zk job: its commitment carries a proof, forged only by the cheater."""
        self.nonce += 1
        forged = forged and node is CHEATER
        req, com = zk_job(self.nonce, node, forged)
        if self.accepted(record(req, com)):
            self.jobs[req.job_id] = (req, com, not forged)

    @precondition(lambda self: any(j.zk for j in self.state.jobs.values()))
    @rule(data=st.data(), accuser=st.sampled_from(MACHINE_VALIDATORS))
    def accuse_invalid_proof(self, data: st.DataObject, accuser: SigningKey) -> None:
        """INVALID_PROOF evidence on a zk job, mostly a pending one: the ledger re-checks it."""
        zk = [j for j in self.state.jobs.values() if j.zk]
        pending = [j for j in zk if j.status is JobStatus.PENDING]
        if pending and data.draw(st.sampled_from((True, True, True, False)), label="pending"):
            zk = pending
        forged = [j for j in zk if not self.jobs[j.job_id][2]]
        if forged and data.draw(st.booleans(), label="forged"):
            zk = forged
        job = data.draw(st.sampled_from(zk))
        req, com, right = self.jobs[job.job_id]
        if self.accepted(invalid_proof(accuser, req, com)) and right:
            self.liars.add(pk(accuser))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def client_reuses_a_nonce(self, data: st.DataObject) -> None:
        """Another request with a used nonce: refused however it differs."""
        old, com, _ = data.draw(st.sampled_from(list(self.jobs.values())))
        again = request(old.nonce, old.fee - 1 if old.fee > FEE - 1 else old.fee + 1,
                        KEY_OF.get(old.client, CLIENT))
        error = self.submit(record(again, commit(again, KEY_OF[com.node])))
        assert error is not None

    @precondition(lambda self: any(com.node == pk(CHEATER) for _, com, _ in self.jobs.values()))
    @rule(data=st.data(), output=st.binary(min_size=1, max_size=2))
    def cheater_commits_twice(self, data: st.DataObject, output: bytes) -> None:
        req = data.draw(st.sampled_from([req for req, com, _ in self.jobs.values()
                                         if com.node == pk(CHEATER)]))
        self.submit(record(req, commit(req, CHEATER, output)))

    @rule(reporter=st.sampled_from(MACHINE_VALIDATORS), nonce=st.integers(0, 3))
    def report_cheater_equivocation(self, reporter: SigningKey, nonce: int) -> None:
        req = request(10_000 + nonce)
        self.submit(equivocation(reporter, commit(req, CHEATER, b"one"),
                                 commit(req, CHEATER, b"two")))

    @rule(victim=st.sampled_from(HONEST_NODES), reporter=st.sampled_from(MACHINE_VALIDATORS),
          nonce=st.integers(0, 3))
    def cheater_forges_equivocation(self, victim: SigningKey, reporter: SigningKey,
                                    nonce: int) -> None:
        req = request(20_000 + nonce)
        first, second = (forge(unsigned_commitment(req, pk(victim), out), CHEATER)
                         for out in (b"one", b"two"))
        assert not self.accepted(equivocation(reporter, first, second))

    @rule(salt=st.binary(max_size=1), skew=st.sampled_from((1, 1, 1, 1, 0, 2)))
    def beacon_round(self, salt: bytes, skew: int) -> None:
        number = max(self.state.current_round + skew, 0)
        in_order = number == self.state.current_round + 1
        assert self.accepted(beacon(number, salt)) == in_order

    @rule(rounds=st.integers(2, 8))
    def time_passes(self, rounds: int) -> None:
        for _ in range(rounds):
            self.beacon_round(b"later", 1)

    def awaited(self) -> list[Job]:
        """Pending jobs whose assigned auditor's answer is awaited."""
        return [j for j in self.state.jobs.values()
                if j.status is JobStatus.PENDING and j.auditor is not None]

    @precondition(lambda self: self.awaited())
    @rule(data=st.data(), answer=st.sampled_from(("truth", "truth", "inconclusive", "lazy")))
    def auditor_answers(self, data: st.DataObject, answer: str) -> None:
        """The assigned auditor answers: the truth (VALID, or evidence), INCONCLUSIVE, or, if it
        is lazy, VALID without re-executing. Silence is the rule that does nothing."""
        job = data.draw(st.sampled_from(self.awaited()))
        auditor = KEY_OF[job.auditor or b""]
        com = self.jobs[job.job_id][1]
        assert job.assigned_round is not None
        if answer == "lazy" and auditor in LAZY_VALIDATORS:
            accepted = self.accepted(attest(auditor, com, Verdict.VALID, job.assigned_round))
            if accepted and not self.jobs[job.job_id][2]:
                self.liars.add(pk(auditor))
        elif answer == "inconclusive":
            self.submit(attest(auditor, com, Verdict.INCONCLUSIVE, job.assigned_round))
        elif self.truth(job.job_id) is Verdict.VALID:
            self.submit(attest(auditor, com, Verdict.VALID, job.assigned_round))
        else:
            self.submit(mismatch(auditor, com, job.sample_round))

    @precondition(lambda self: self.has_revealed_jobs())
    @rule(data=st.data(), validator=st.sampled_from(MACHINE_VALIDATORS))
    def anyone_attests(self, data: st.DataObject, validator: SigningKey) -> None:
        """An attestation from whoever: accepted only from the assigned auditor or a member."""
        candidates = self.revealed_jobs(data)
        if not candidates:
            return
        job = self.state.jobs[data.draw(st.sampled_from(candidates))]
        dispute = open_dispute_of(self.state, job)
        com = self.jobs[job.job_id][1]
        drawn = dispute.drawn_round or 0 if dispute else 0
        rounds = [job.sample_round, job.assigned_round or 0, drawn]
        round_number = data.draw(st.sampled_from(rounds))
        if self.accepted(attest(validator, com, Verdict.VALID, round_number)):
            assert pk(validator) == job.auditor or (
                dispute is not None and pk(validator) in dispute.committee)
            if not self.jobs[job.job_id][2]:
                self.liars.add(pk(validator))

    @precondition(lambda self: self.has_revealed_jobs())
    @rule(data=st.data(), accuser=st.sampled_from(MACHINE_VALIDATORS))
    def accuse_mismatch(self, data: st.DataObject, accuser: SigningKey) -> None:
        candidates = self.revealed_jobs(data)
        if not candidates:
            return
        job = self.state.jobs[data.draw(st.sampled_from(candidates))]
        lies = self.jobs[job.job_id][2]
        if self.accepted(mismatch(accuser, self.jobs[job.job_id][1], job.sample_round)) and lies:
            self.liars.add(pk(accuser))

    @precondition(lambda self: any(d.is_open and d.committee for d in self.state.disputes.values()))
    @rule(data=st.data())
    def committee_votes(self, data: st.DataObject) -> None:
        """Members who have not voted yet vote: mostly the truth, sometimes INCONCLUSIVE or not."""
        dispute = data.draw(st.sampled_from([d for d in self.state.disputes.values()
                                             if d.is_open and d.committee]))
        assert dispute.drawn_round is not None
        job = self.state.jobs[dispute.job_id]
        truth = self.truth(job.job_id)
        for member in dispute.committee:
            current = self.state.disputes[dispute.dispute_id]
            if not current.is_open or member in current.voters():
                continue
            verdict = data.draw(st.sampled_from((truth, truth, Verdict.INCONCLUSIVE, None)))
            if verdict is not None:
                vote = attest(KEY_OF[member], self.jobs[job.job_id][1], verdict,
                              dispute.drawn_round, reason=f"vote {dispute.dispute_id.hex()}")
                assert self.accepted(vote)

    @rule(data=st.data(), kind=st.sampled_from(("record", "attest", "bond")))
    def another_network_replays(self, data: st.DataObject, kind: str) -> None:
        """Messages and transactions signed for another chain are refused as such."""
        elsewhere = sha256(b"another network")
        self.nonce += 1
        if kind == "record" or not self.jobs:
            req = dataclasses.replace(request(self.nonce), chain_id=elsewhere).signed(CLIENT)
            error = self.submit(record(req, commit(req)))
        elif kind == "attest":
            _, com, _ = data.draw(st.sampled_from(list(self.jobs.values())))
            foreign = dataclasses.replace(com, chain_id=elsewhere).signed(KEY_OF[com.node])
            error = self.submit(attest(VALIDATORS[0], foreign, Verdict.VALID, 0))
        else:
            account = self.state.accounts[pk(VALIDATORS[0])]
            error = self.submit(Bond(pk(VALIDATORS[0]), c.VALIDATOR, 1, nonce=account.nonce + 1,
                                     chain_id=elsewhere).signed(VALIDATORS[0]))
        assert isinstance(error, WrongChain)

    @precondition(lambda self: self.has_revealed_jobs())
    @rule(data=st.data(), reporter=st.sampled_from(MACHINE_VALIDATORS), serves=st.booleans())
    def report_unavailable(self, data: st.DataObject, reporter: SigningKey, serves: bool) -> None:
        """A report on a sampled job; honest nodes serve at once, the cheater when it likes."""
        candidates = self.revealed_jobs(data)
        if not candidates:
            return
        job = self.state.jobs[data.draw(st.sampled_from(candidates))]
        report = ReportUnavailable(pk(reporter), job.job_id, chain_id=Chain.id,
                                   nonce=self.state.accounts[pk(reporter)].nonce + 1)
        if not self.accepted(report.signed(reporter)):
            return
        if job.node != pk(CHEATER) or serves:
            output = b"right" if self.jobs[job.job_id][2] else b"wrong"
            if job.node == pk(CANARY_NODE):
                output = b"canary"
            assert self.accepted(ServeData(job.job_id, output + job.job_id))

    @rule(amount=st.sampled_from((MIN_NODE, 2 * MIN_NODE, 5 * MIN_NODE, 1)),
          skew=st.sampled_from((0, 0, 0, -1, 1)))
    def cheater_unbonds(self, amount: int, skew: int) -> None:
        account = self.state.accounts[pk(CHEATER)]
        tx = Unbond(pk(CHEATER), c.NODE, amount, chain_id=Chain.id, nonce=account.nonce + 1 + skew)
        error = self.submit(tx.signed(CHEATER))
        if skew < 0:
            assert isinstance(error, ReplayedMessage)
        elif skew > 0:
            assert isinstance(error, NonceOutOfOrder)

    @rule(skew=st.sampled_from((0, 0, 0, -1, 1)))
    def cheater_withdraws(self, skew: int) -> None:
        before = self.state.accounts[pk(CHEATER)]
        tx = Withdraw(pk(CHEATER), chain_id=Chain.id, nonce=before.nonce + 1 + skew)
        if not self.accepted(tx.signed(CHEATER)):
            return
        assert skew == 0
        gone = [e for e in before.unbonding if e not in self.state.accounts[pk(CHEATER)].unbonding]
        for entry in gone:
            # No offence committed while it was bonded can still be proven
            assert entry.release_round <= self.state.current_round
            for job in self.state.jobs.values():
                if job.node == pk(CHEATER) and job.recorded_round <= entry.started_round:
                    assert job.status is not JobStatus.PENDING, "withdrew ahead of a pending job"
            assert not any(self.state.disputes[d].node == pk(CHEATER)
                           for d in self.state.open_disputes)

    @rule(wrong_salt=st.booleans())
    def operator_runs_a_canary(self, wrong_salt: bool) -> None:
        """Plant two commitments to a canary, record it next round; it looks like any job."""
        self.nonce += 1
        req = request(self.nonce)
        salts = [sha256(b"salt" + req.job_id + bytes([i])) for i in range(2)]
        for salt in salts:
            assert self.accepted(PlantCanary(canary_digest(salt, req.job_id)))
        self.beacon_round(b"canary", 1)
        com = commit(req, CANARY_NODE, b"canary")
        if self.accepted(record(req, com)):
            self.jobs[req.job_id] = (req, com, False)
            self.canaries[req.job_id] = salts if not wrong_salt else [b"wrong", *salts]

    @precondition(lambda self: self.canaries)
    @rule(data=st.data())
    def operator_reveals_a_canary(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.canaries)))
        salts = self.canaries[job_id]
        results = [self.submit(RevealCanary(job_id, salt)) for salt in salts]
        assert sum(r is None for r in results) <= 1, "a canary slashed twice"
        if any(r is None for r in results):
            del self.canaries[job_id]

    @precondition(lambda self: self.replayable)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        assert not self.accepted(data.draw(st.sampled_from(self.replayable)))

    @precondition(lambda self: self.punished)
    @rule(data=st.data(), reporter=st.sampled_from(MACHINE_VALIDATORS))
    def punish_again(self, data: st.DataObject, reporter: SigningKey) -> None:
        """The evidence behind an accepted slash, re-worded or re-reported: nobody loses more."""
        event = data.draw(st.sampled_from(self.punished))
        variants: list[Event] = []
        if isinstance(event, Accuse):
            evidence = event.evidence_message
            if evidence.offence is Offence.EQUIVOCATION:
                second = event.conflicting_commitment
                assert second is not None
                variants.append(equivocation(reporter, second, event.accused_commitment))
            elif isinstance(event, AccuseInvalidProof):
                variants.append(invalid_proof(reporter, event.request_message,
                                              event.accused_commitment, detail="again"))
            else:
                variants.append(mismatch(reporter, event.accused_commitment,
                                         evidence.beacon_round, detail="again"))
        elif isinstance(event, RecordJob):
            variants.append(record(event.request_message, commit(
                event.request_message, KEY_OF[event.commitment_message.node], b"yet another")))
        for variant in variants:
            stakes = {a: (r.node.amount, r.unbonding_total) for a, r in self.state.accounts.items()}
            if self.accepted(variant):
                if isinstance(variant, Accuse):
                    accused = variant.accused_commitment.node
                    if self.jobs.get(variant.evidence_message.job_id, (None, None, False))[2]:
                        self.liars.add(pk(reporter))  # a new, false accusation: its own offence
                else:
                    assert isinstance(variant, RecordJob)
                    accused = variant.commitment_message.node
                now = self.state.accounts[accused]
                assert (now.node.amount, now.unbonding_total) == stakes[accused]

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS), amount=st.integers(1, 30_000))
    def mint(self, account: SigningKey, amount: int) -> None:
        self.submit(Mint(pk(account), amount))

    @rule(account=st.sampled_from(MACHINE_ACCOUNTS), role=st.sampled_from(c.ROLES),
          amount=st.integers(1, 2 * MIN_NODE))
    def bond(self, account: SigningKey, role: str, amount: int) -> None:
        self.submit(Bond(pk(account), role, amount))

    @invariant()
    def tokens_are_conserved(self) -> None:
        assert self.state.total_supply() == self.state.minted

    @invariant()
    def nothing_is_negative(self) -> None:
        for record_ in self.state.accounts.values():
            assert record_.balance >= 0 and record_.node.amount >= 0
            assert record_.validator.amount >= 0
            assert all(e.amount > 0 for e in record_.unbonding)
        assert all(j.fee >= 0 for j in self.state.jobs.values()) and self.state.burned >= 0

    @invariant()
    def honest_nodes_never_lose_stake(self) -> None:
        for key in HONEST_NODES:
            stake = self.state.accounts[pk(key)].node
            assert not stake.slashed_out and stake.offences == 0
            assert stake.amount >= self.floor[pk(key)]
            self.floor[pk(key)] = stake.amount

    @invariant()
    def validators_that_never_lied_lose_only_liveness_penalties(self) -> None:
        """A validator that never lied is never slashed for an offence: silence costs it the
        liveness penalty, and nothing else ever takes its stake. A truthful accuser is never
        outvoted by a lie here: a validator that attested a job never sits on its committee,
        and members vote the truth, INCONCLUSIVE, or nothing."""
        penalty = MACHINE_PARAMS.liveness_penalty
        for key in MACHINE_VALIDATORS:
            stake = self.state.accounts[pk(key)].validator
            if pk(key) in self.liars:
                continue
            assert stake.offences == 0 and not stake.slashed_out
            floor = self.validator_floor[pk(key)]
            assert stake.amount >= floor or (floor - stake.amount) % penalty == 0
            self.validator_floor[pk(key)] = stake.amount

    def teardown(self) -> None:
        """The accepted log replays to the same state, and the state hash is its content's."""
        replayed = State()
        for event in self.log:
            process_event(replayed, event)
        install_proof_checker(self.previous_checker)
        assert replayed == self.state
        assert state_hash(replayed) == state_hash(self.state)
        assert decode_state(encode_state(self.state)) == self.state


LedgerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase
