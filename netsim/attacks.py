"""The adversary strategies of the ledger review, played on the real rules and measured.

Each attack is a strategy of a coalition: an inference node and a share r of
the validators acting together (or, for ``lazy`` and ``grinding``, the
validators alone). A run builds a network on the real ledger rules with real
signed messages (as the reference path does): honest nodes serving honest
traffic, 30 validators of which ``round(r·30)`` collude, the operator's
canaries, and the ledger sampling, assigning and drawing every committee
itself. The same run is played twice, once with the coalition attacking and
once with the same agents honest, on the same seed: the **attacker's profit**
is what the attack gained over honesty, the coalition's tokens (balances,
stakes, unbonding, locked earnings) less the compute it spent, per job
attacked. ``honest_slashed`` counts honest nodes and validators that the
attack made lose stake to an offence.

* ``shield``: the node cheats on every job (saving C); when one is sampled, a
  colluder accuses it first to block honest accusations, colluding auditors
  call it VALID, and colluders drawn onto its committee stay silent. Per job
  sent to the node.
* ``grinding``: colluders accuse honest nodes' sampled jobs falsely and vote
  FRAUD on their committees, hoping to frame them; they can pick when and as
  whom to accuse, which no longer chooses the committee. Per false accusation.
* ``burst``: the node never runs the model and asks for 400 jobs a round,
  colluding auditors cover it, colluders drawn onto committees stay silent.
  Per job the node recorded.
* ``lazy``: a share r of the validators attest and vote VALID without
  re-executing, saving C; the operator plants canaries on 5 % of the jobs.
  Per audit assigned to a lazy validator. A lazy audit only loses when it
  meets a canary, so telling its profit from noise takes thousands of
  sampled jobs: this attack runs on netsim's fast path (which makes the
  reference path's decisions, canaries included, as the equivalence test
  holds it to), with about ``LAZY_SAMPLED`` sampled jobs whatever p.
* ``silent``: the node cheats on every job and its sybil validators (bonded,
  twice the minimum stake each) never answer an audit or a vote, so that
  sampled jobs find no auditor. Per job sent to the node.
* ``replay``: the node replays its recorded jobs on another network where it
  is also bonded, and answers other nodes' requests with its own commitments.
  Per replay attempted. A refused replay moves no token, so the best the
  rules can make it is a profit of exactly 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from netsim.beacon import ChainBeacon
from netsim.config import SimConfig, resolve
from netsim.fast import run_fast
from netsim.outcome import Outcome
from netsim.population import LAZY, Population
from protocol.codec import Tensor, encode
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from slashing import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Event,
    LedgerParams,
    Mint,
    PlantCanary,
    RecordJob,
    RegisterBeacon,
    RevealCanary,
    SetParams,
    State,
    apply_event_in_place,
    canary_digest,
)
from slashing import constants as c
from slashing.rules import is_bonded_node, is_bonded_validator
from slashing.service import safe_params
from slashing.state import Job, JobStatus

ATTACKS: tuple[str, ...] = ("shield", "grinding", "burst", "lazy", "silent", "replay")
SHARES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.33)
RATES_PPM: tuple[int, ...] = (10_000, 50_000, 200_000)
VALIDATORS = 30
HONEST_NODES = 3
HONEST_JOBS = 2
"""Jobs a round to each honest node."""
ATTACKER_JOBS = 10
"""Jobs a round clients send the attacking node at least (the burst asks for ``BURST_JOBS``)."""
ATTACKER_SAMPLED = 0.5
"""Of the attacking node's jobs, about this many a round are sampled whatever p: at p = 1 %
it is sent 50 a round, so that a run samples enough of them to tell a profit from luck."""
BURST_JOBS = 400
NODE_STAKE = 2 * c.MIN_STAKE[c.NODE]
VALIDATOR_STAKE = 2 * c.MIN_STAKE[c.VALIDATOR]
CANARY_NODES = 4
"""The operator's canary nodes: a caught canary jails its node, so it keeps a few."""
CANARY_STAKE = 10 * c.MIN_STAKE[c.NODE]
CANARY_SHARE = 0.05
"""The operator's canaries: 5 % of the jobs, as in the demo. A lazy VALID saves C = 50 and
meets a canary one time in twenty, which costs it the lazy slash L = 5 000 and the accuser's
share it would have earned by accusing: at least c·L = 250 a lazy audit."""
LAZY_SAMPLED = 2_000
"""Sampled jobs a ``lazy`` run aims at, whatever p: it runs ``LAZY_SAMPLED / p`` jobs."""
LAZY_NODES = 20
OUTPUT_TAG = b"netsim/attack-output\x00"


@dataclass(frozen=True)
class AttackSpec:
    attack: str
    colluding: float
    sample_ppm: int
    rounds: int = 30
    seed: int = 0

    @property
    def colluders(self) -> int:
        return int(self.colluding * VALIDATORS + 0.5)

    def params(self) -> LedgerParams:
        """The defaults with this p, and S fitted to it as a genesis would be."""
        base = LedgerParams.default()
        return safe_params(dataclasses.replace(base, sample_ppm=self.sample_ppm))


@dataclass
class AttackResult:
    attack: str
    colluding: float
    sample_ppm: int
    attacked: int
    """Jobs, accusations, audits or replays the profit is divided by (see the module)."""
    attacker_profit: float
    """Gain over honesty per attacked unit; negative: the attack loses."""
    honest_slashed: int
    details: dict[str, float] = field(default_factory=dict)


def output(job_id: bytes, right: bool) -> bytes:
    return sha256(OUTPUT_TAG + job_id + (b"right" if right else b"made up"))


class World:
    """A network on the real rules, played by honest agents and, when ``attacking``, the
    coalition of ``spec``."""

    def __init__(self, spec: AttackSpec, attacking: bool) -> None:
        self.spec = spec
        self.attack = spec.attack
        self.attacking = attacking
        self.params = params = spec.params()
        self.attacker_jobs = max(ATTACKER_JOBS,
                                 -(-int(ATTACKER_SAMPLED * 1_000_000) // spec.sample_ppm))
        seed = f"netsim/attack/{spec.seed}"
        self.beacon = ChainBeacon(spec.seed)
        self.state = State()
        self.clients = [SigningKey.derive(f"{seed}/client/{i}") for i in range(2)]
        self.honest_nodes = [SigningKey.derive(f"{seed}/node/{i}") for i in range(HONEST_NODES)]
        self.attacker = SigningKey.derive(f"{seed}/attacker")
        self.canary_nodes = [SigningKey.derive(f"{seed}/canary-node/{i}")
                             for i in range(CANARY_NODES)]
        self.validators = [SigningKey.derive(f"{seed}/validator/{i}") for i in range(VALIDATORS)]
        self.colluding = {v.public.raw for v in self.validators[: spec.colluders]}
        self.keys = {k.public.raw: k for k in (*self.clients, *self.honest_nodes, self.attacker,
                                               *self.canary_nodes, *self.validators)}
        self.compute: dict[bytes, float] = {}
        self.commitments: dict[bytes, Commitment] = {}
        self.right: dict[bytes, bool] = {}
        self.nonce = 0
        self.canaries: dict[bytes, bytes] = {}
        self.planted: list[tuple[bytes, JobRequest]] = []
        self.attacked = 0
        self.counts: dict[str, int] = {}
        register = RegisterBeacon(public_key=self.beacon.public_key, first_round=0)
        events: list[Event] = [register, SetParams(params)]
        for client in self.clients:
            events.append(Mint(account=client.public.raw, amount=10**12))
        for node in (*self.honest_nodes, self.attacker):
            events += [Mint(account=node.public.raw, amount=NODE_STAKE),
                       Bond(account=node.public.raw, role=c.NODE, amount=NODE_STAKE)]
        for node in self.canary_nodes:
            events += [Mint(account=node.public.raw, amount=CANARY_STAKE),
                       Bond(account=node.public.raw, role=c.NODE, amount=CANARY_STAKE)]
        for v in self.validators:
            events += [Mint(account=v.public.raw, amount=VALIDATOR_STAKE + 10**7),
                       Bond(account=v.public.raw, role=c.VALIDATOR, amount=VALIDATOR_STAKE)]
        for event in events:
            apply_event_in_place(self.state, event)
        assert self.state.chain_id is not None
        self.chain_id = self.state.chain_id
        self.other = self._other_network() if self.attack == "replay" else None
        self.reveal()

    def _other_network(self) -> State:
        """Another network where the attacking node is bonded too: a replay's target."""
        state = State()
        register = RegisterBeacon(public_key=sha256(b"another network") + bytes(16), first_round=0)
        for event in (register, SetParams(self.params),
                      *(Mint(account=k.public.raw, amount=10**12) for k in self.clients),
                      Mint(account=self.attacker.public.raw, amount=NODE_STAKE),
                      Bond(account=self.attacker.public.raw, role=c.NODE, amount=NODE_STAKE),
                      BeaconRound(0, self.beacon.signature(0), self.beacon.value(0))):
            apply_event_in_place(state, event)
        return state

    # -- plumbing ------------------------------------------------------------------------------
    def spend(self, account: bytes, amount: float) -> None:
        self.compute[account] = self.compute.get(account, 0.0) + amount

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def apply(self, event: Event) -> bool:
        try:
            apply_event_in_place(self.state, event)
        except ProtocolError:
            return False
        return True

    def reveal(self) -> None:
        number = self.state.current_round + 1
        self.apply(BeaconRound(number, self.beacon.signature(number), self.beacon.value(number)))

    def is_coalition(self, account: bytes) -> bool:
        return self.attacking and (account in self.colluding or account == self.attacker.public.raw)

    def request(self, node: SigningKey) -> JobRequest:
        self.nonce += 1
        client = self.clients[self.nonce % 2]
        return JobRequest(
            model_id=sha256(b"netsim/attack-model"),
            input=Tensor("uint8", (8,), self.nonce.to_bytes(8, "big")),
            client=client.public.raw, node=node.public.raw, nonce=self.nonce,
            fee=self.params.reward + self.params.verification_fee,
            expiry_round=self.state.current_round + 4, chain_id=self.chain_id,
        ).signed(client)

    def commit(self, request: JobRequest, node: SigningKey, right: bool) -> Commitment:
        return Commitment(
            job_id=request.job_id, model_id=request.model_id,
            input_hash=sha256(encode(request.input)), output_hash=output(request.job_id, right),
            node=node.public.raw, chain_id=request.chain_id,
        ).signed(node)

    def record(self, request: JobRequest, commitment: Commitment, right: bool) -> bool:
        if not self.apply(RecordJob(request=request.encode(), commitment=commitment.encode())):
            return False
        self.commitments[request.job_id] = commitment
        self.right[request.job_id] = right
        return True

    # -- a round -------------------------------------------------------------------------------
    def step(self) -> None:
        """Jobs are recorded, the next round is revealed, everyone acts on it."""
        self.record_canaries()
        if self.attack == "lazy":
            self.plant_canaries()
        for node in self.honest_nodes:
            for _ in range(HONEST_JOBS):
                request = self.request(node)
                if self.attack == "replay" and self.attacking:
                    self.front_run(request)
                self.spend(node.public.raw, self.params.compute_cost)
                self.record(request, self.commit(request, node, True), True)
        self.serve_attacker()
        self.reveal()
        self.act()
        self.reveal_canaries()

    def serve_attacker(self) -> None:
        cheats = self.attacking and self.attack in ("shield", "burst", "silent")
        asks = BURST_JOBS if self.attack == "burst" else self.attacker_jobs
        node = self.attacker
        for _ in range(asks):
            request = self.request(node)
            commitment = self.commit(request, node, not cheats)
            if not self.record(request, commitment, not cheats):
                break  # jailed, tombstoned, or past its in-flight limit: no more this round
            if self.attack in ("shield", "burst", "silent"):
                self.attacked += 1
            if not cheats:
                self.spend(node.public.raw, self.params.compute_cost)
            if self.attack == "replay" and self.attacking and self.other is not None:
                self.attacked += 1
                try:  # the same signed job, on another network
                    apply_event_in_place(self.other, RecordJob(request=request.encode(),
                                                               commitment=commitment.encode()))
                    self.count("replays_accepted")
                except ProtocolError:
                    self.count("replays_refused")

    def front_run(self, request: JobRequest) -> None:
        """The attacker answers a request meant for another node with its own commitment."""
        self.attacked += 1
        theirs = self.commit(request, self.attacker, False)
        if self.apply(RecordJob(request=request.encode(), commitment=theirs.encode())):
            self.count("replays_accepted")
        else:
            self.count("replays_refused")

    # -- what validators do --------------------------------------------------------------------
    def act(self) -> None:
        state = self.state
        now = state.current_round
        for dispute_id in sorted(state.open_disputes):
            dispute = state.disputes[dispute_id]
            if dispute.drawn_round == now:
                self.vote(dispute_id)
        if self.attacking and self.attack in ("shield", "grinding"):
            self.colluders_accuse(now)
        for job_id in sorted(state.open_audits):
            job = state.jobs[job_id]
            if job.auditor is not None and job.assigned_round == now:
                self.audit(job)

    def behaves(self, validator: bytes, job: Job) -> str:
        """``honest``, ``cover`` (VALID unchecked), ``lazy`` or ``silent`` for this job."""
        if not self.is_coalition(validator):
            return "honest"
        partner = job.node == self.attacker.public.raw
        if self.attack in ("shield", "burst"):
            return "cover" if partner else "honest"
        return {"lazy": "lazy", "silent": "silent"}.get(self.attack, "honest")

    def audit(self, job: Job) -> None:
        auditor = job.auditor
        assert auditor is not None and job.assigned_round is not None
        key = self.keys[auditor]
        how = self.behaves(auditor, job)
        if how == "silent":
            return
        if self.attack == "lazy" and auditor in self.colluding:
            self.attacked += 1
        commitment = self.commitments[job.job_id]
        right = self.right.get(job.job_id, True)
        if how == "honest":
            self.spend(auditor, self.params.compute_cost)
        if how == "honest" and not right:
            self.accuse(key, job)
            return
        attestation = Attestation(
            job_id=job.job_id, commitment_id=commitment.content_id, validator=auditor,
            verdict=Verdict.VALID, beacon_round=job.assigned_round, chain_id=self.chain_id,
        ).signed(key)
        self.apply(Attest(attestation=attestation.encode()))

    def accuse(self, key: SigningKey, job: Job) -> bool:
        commitment = self.commitments[job.job_id]
        evidence = Evidence(
            offence=Offence.MISMATCH, job_id=job.job_id, accuser=key.public.raw,
            commitment=commitment.encode(), chain_id=self.chain_id,
            observed_hash=output(job.job_id, not self.right.get(job.job_id, True)),
            beacon_round=job.sample_round,
        ).signed(key)
        return self.apply(Accuse(evidence=evidence.encode()))

    def colluders_accuse(self, now: int) -> None:
        """``shield``: accuse the partner's sampled jobs first. ``grinding``: accuse one honest
        node's sampled job a round falsely, keeping the other colluders free to be drawn onto
        committees (a false accuser is jailed)."""
        state = self.state
        free = [v for v in sorted(self.colluding) if is_bonded_validator(state, v)]
        if self.attack == "grinding":
            free = free[:1]
        for job_id in sorted(state.open_audits):
            job = state.jobs[job_id]
            if job.sample_round != now or not job.sampled or not free:
                continue
            partner = job.node == self.attacker.public.raw
            if partner != (self.attack == "shield") or job.dispute is not None:
                continue
            if partner and job.auditor in self.colluding:
                continue  # a colluding auditor covers it: no need to shield
            accuser = next((v for v in free if v != job.auditor), None)
            if accuser is None:
                continue
            if self.accuse(self.keys[accuser], job) and self.attack == "grinding":
                self.attacked += 1
                free.remove(accuser)

    def vote(self, dispute_id: bytes) -> None:
        dispute = self.state.disputes[dispute_id]
        job = self.state.jobs[dispute.job_id]
        commitment = self.commitments[job.job_id]
        right = self.right.get(job.job_id, True)
        framing = self.attacking and self.attack == "grinding" and right
        for member in dispute.committee:
            if not self.state.disputes[dispute_id].is_open:
                return
            how = self.behaves(member, job)
            if how in ("silent", "cover"):
                continue  # the coalition's members leave the committee without a majority
            if how == "honest" and not (framing and member in self.colluding):
                self.spend(member, self.params.compute_cost)
                verdict = Verdict.VALID if right else Verdict.FRAUD
            elif framing:
                verdict = Verdict.FRAUD
            else:
                verdict = Verdict.VALID  # lazy: unchecked
            vote = Attestation(
                job_id=job.job_id, commitment_id=commitment.content_id, validator=member,
                verdict=verdict, beacon_round=dispute.drawn_round or 0, chain_id=self.chain_id,
                reason=f"vote {dispute.draws}",
            ).signed(self.keys[member])
            self.apply(Attest(attestation=vote.encode()))

    # -- the operator's canaries ----------------------------------------------------------------
    def plant_canaries(self) -> None:
        jobs = HONEST_NODES * HONEST_JOBS + self.attacker_jobs
        due = self.spec.seed + self.state.current_round
        count = sum(
            int.from_bytes(sha256(b"canary" + due.to_bytes(8, "big") + bytes([i]))[:4], "big")
            < int(CANARY_SHARE * 2**32)
            for i in range(jobs)
        )
        node = next((n for n in self.canary_nodes
                     if is_bonded_node(self.state, n.public.raw)), None)
        if node is None:
            return  # every canary node is jailed or tombstoned this round
        for _ in range(count):
            request = self.request(node)
            salt = sha256(b"netsim/canary-salt" + request.job_id)
            if self.apply(PlantCanary(digest=canary_digest(salt, request.job_id))):
                self.planted.append((salt, request))

    def record_canaries(self) -> None:
        for salt, request in self.planted:
            commitment = self.commit(request, self.keys[request.node], False)
            if self.record(request, commitment, False):
                self.canaries[request.job_id] = salt
                self.count("canaries")
        self.planted = []

    def reveal_canaries(self) -> None:
        for job_id, salt in list(self.canaries.items()):
            if self.state.jobs[job_id].status is not JobStatus.PENDING:
                if self.apply(RevealCanary(job_id=job_id, salt=salt)):
                    self.count("canaries_revealed")
                del self.canaries[job_id]

    # -- the end -------------------------------------------------------------------------------
    def finish(self) -> None:
        """Rounds until every job is final and every canary revealed."""
        for _ in range(c.MAX_STAMP_LEAD * 2):
            pending = any(j.status is JobStatus.PENDING for j in self.state.jobs.values())
            if not pending and not self.canaries:
                return
            self.reveal()
            self.act()
            self.reveal_canaries()

    def worth(self, accounts: list[bytes]) -> float:
        total = 0.0
        for account in accounts:
            record_ = self.state.accounts[account]
            total += (record_.balance + record_.bonded + record_.unbonding_total
                      + record_.locked_total - self.compute.get(account, 0.0))
        return total

    def coalition(self) -> list[bytes]:
        members = sorted(self.colluding)
        if self.attack not in ("lazy", "grinding"):
            members.append(self.attacker.public.raw)
        return members

    def honest_slashed(self) -> int:
        honest = [*(k.public.raw for k in self.honest_nodes),
                  *(v.public.raw for v in self.validators if v.public.raw not in self.colluding)]
        if self.attack in ("lazy", "grinding"):
            honest.append(self.attacker.public.raw)  # there the node is not in the coalition
        return sum(
            self.state.accounts[a].node.offences + self.state.accounts[a].validator.offences > 0
            for a in honest
        )


def play(spec: AttackSpec, attacking: bool) -> World:
    world = World(spec, attacking)
    for _ in range(spec.rounds):
        world.step()
    world.finish()
    return world


def lazy_config(spec: AttackSpec, lazy: float, sampled: int) -> SimConfig:
    jobs = max(int(sampled * 1_000_000 / spec.sample_ppm), 1)
    fitted = spec.params()
    return resolve({
        "seed": spec.seed, "epochs": 40, "jobs": jobs, "canaries": CANARY_SHARE,
        "nodes": {"count": LAZY_NODES},
        "validators": {"count": VALIDATORS, "lazy": lazy},
        "ledger": {"sample_ppm": spec.sample_ppm, "fraud_slash": fitted.fraud_slash},
    })


def run_lazy(spec: AttackSpec, sampled: int = LAZY_SAMPLED) -> AttackResult:
    """Lazy validators on netsim's fast path, against the same network with them honest."""
    attack_config = lazy_config(spec, spec.colluders / VALIDATORS, sampled)
    population = Population.draw(attack_config)
    lazy = [i for i, kind in enumerate(population.validator_kind) if kind == LAZY]
    attack = run_fast(population)
    honest = run_fast(Population.draw(lazy_config(spec, 0.0, sampled)))
    cost = attack_config.cost

    def worth(outcome: Outcome) -> float:
        return float(sum(
            int(outcome.validator_balance[i]) + int(outcome.validator_stake[i])
            - int(outcome.validator_reexecutions[i]) * cost
            for i in lazy
        ))

    audits = int(sum(int(attack.validator_audits[i]) for i in lazy))
    gain = worth(attack) - worth(honest)
    others = [i for i in range(VALIDATORS) if i not in lazy]
    slashed = sum(int(attack.validator_stake[i]) < attack_config.validator_bond for i in others)
    slashed += int((attack.node_stake < attack_config.node_bond).sum())
    return AttackResult(
        attack=spec.attack, colluding=spec.colluding, sample_ppm=spec.sample_ppm,
        attacked=audits, attacker_profit=gain / max(audits, 1), honest_slashed=slashed,
        details={"coalition_gain": gain, "lazy_audits": float(audits),
                 "jobs": float(attack_config.jobs),
                 "lazy_slashed": float(sum(int(attack.validator_stake[i])
                                           < attack_config.validator_bond for i in lazy)),
                 "fraud_slash": float(spec.params().fraud_slash)},
    )


def run_attack(spec: AttackSpec) -> AttackResult:
    """The attack played against its honest counterfactual; the profit is the difference."""
    if spec.attack == "lazy":
        return run_lazy(spec)
    attack, honest = play(spec, True), play(spec, False)
    members = attack.coalition()
    gain = attack.worth(members) - honest.worth(members)
    attacked = max(attack.attacked, 1)
    counters = attack.state.counters
    details: dict[str, float] = {
        "coalition_gain": gain,
        "disputes_fraud": counters.disputes_fraud,
        "disputes_valid": counters.disputes_valid,
        "disputes_inconclusive": counters.disputes_inconclusive,
        "liveness_penalties": counters.liveness_penalties,
        "lazy_validators_slashed": counters.lazy_validators_slashed,
        "wrong_valid_slashed": counters.wrong_valid_slashed,
        "audits_unanswered": counters.audits_unanswered,
        "fraud_slash": spec.params().fraud_slash,
        **{k: float(v) for k, v in attack.counts.items()},
    }
    return AttackResult(
        attack=spec.attack, colluding=spec.colluding, sample_ppm=spec.sample_ppm,
        attacked=attack.attacked, attacker_profit=gain / attacked,
        honest_slashed=attack.honest_slashed(), details=details,
    )
