"""``assay demo``: a whole network in one process, catching a cheating node.

Part of the composition root, like all of ``assay/``: this module wires the
roles together, so it imports ``prover``, ``verifier`` and ``slashing``.
Messages pass in memory, the ledger is a real SQLite file, the beacon a real
chain of BLS signatures, models real torch modules loaded from a real
registry, all on the CPU. The default models are two integer models judged
bit for bit in the ``exact`` mode and two float models judged within
tolerances measured on this machine's honest variation in the ``tensor``
mode, so no honest node is slashed whatever CPU the demo runs on.

Each round: clients send signed jobs to the active nodes, each node runs the
job and signs a commitment, and the ledger records it with the fee in
escrow. Then the beacon reveals the next round; its value decides which of
the round's jobs are audited, and the ledger assigns each its auditor. Every
validator does what the ledger awaits from it: the assigned auditors
re-execute and attest, or file evidence, which opens the job's dispute; the
next round draws its committee, whose members re-execute and vote, and the
ledger slashes whoever the majority finds wrong. After the last job, rounds
advance until every job is final.

**Canaries run.** The operator keeps a canary node, bonded like any other,
whose outputs are deliberately wrong (it always runs another model). For
about ``canary_rate_ppm`` of the jobs it plants a salted commitment
(``PlantCanary``) in one round, has an ordinary client send the canary node
a job in the next, and reveals the commitment (``RevealCanary``) once the job
is final: every validator that called it VALID without re-executing is
slashed. A sampled canary met by an honest auditor is accused and confirmed
like any fraud. ``lazy_validators`` of the validators attest and vote VALID
without re-executing, to show what canaries do to them.

With ``llm=True`` (``assay demo --llm``) the models are the zoo's GPT-2 and
Llama registered in the ``llm`` mode: clients ask for seeded sampled
generations, nodes commit to tokens and an activation sketch, and validators
judge them with one prefill (:mod:`verifier.llm`); the cheater generates
with a same-architecture model from another seed.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Verdict
from protocol.sampling import PPM, check_rate_ppm
from prover import zoo
from prover.adversary import SubstituteModel
from prover.llm.job import LLMJob
from prover.llm.sampler import SamplingParams
from prover.model_store import save_model
from prover.node import (
    InferenceNode,
    load_registered_llms,
    load_registered_models,
    load_registered_tensors,
)
from prover.registry import ModelRegistry
from prover.runtime import DeterministicRuntime
from prover.tensor import TENSOR_MODE
from slashing import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Ledger,
    LedgerParams,
    LedgerRuleError,
    Mint,
    PlantCanary,
    RecordJob,
    RegisterBeacon,
    RevealCanary,
    SetParams,
    canary_digest,
    is_bonded,
)
from slashing import constants as c
from slashing.service import safe_params
from slashing.state import JobStatus
from verifier.tensor import REGISTRY_KEY as TENSOR_KEY
from verifier.tensor_calibration import calibrate_tensor
from verifier.validator import Validator

DEMO_MODELS: tuple[str, ...] = ("mlp-int8", "cnn-int8", "cnn", "gpt2")
"""Two integer models in the exact mode, two float models in the tensor mode."""
DEMO_CALIBRATION_JOBS = 8
LLM_DEMO_MODELS: tuple[str, ...] = ("gpt2", "llama")
LLM_DEMO_NEW_TOKENS = 32
NODE_BOND = 50_000
"""Enough for each node's jobs in flight: its stake covers stake/(p·S) unsettled jobs."""
VALIDATOR_BOND = 20_000
CLIENTS = 3
EXPIRY_ROUNDS = 4
"""Rounds after the current one in which a demo client's job may still be recorded."""
VALIDATOR_FLOAT = 5 * c.DEFAULT_ACCUSER_BOND
"""A validator's free balance beside its stake, to post accuser bonds from."""


class DemoConfigError(ValueError):
    """A demo option out of range; the message names it."""


@dataclass(frozen=True)
class DemoConfig:
    nodes: int = 4
    cheaters: int = 1
    cheat_rate_ppm: int = 500_000
    sample_ppm: int = 200_000
    jobs: int = 240
    validators: int = 7
    jobs_per_round: int = 12
    seed: int = 7
    threads: int = 1
    models: tuple[str, ...] = DEMO_MODELS
    llm: bool = False
    canary_rate_ppm: int = 50_000
    lazy_validators: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.nodes >= 1, f"nodes must be at least 1, got {self.nodes}"),
            (
                0 <= self.cheaters <= self.nodes,
                f"cheaters must be between 0 and nodes ({self.nodes}), got {self.cheaters}",
            ),
            (self.jobs >= 1, f"jobs must be at least 1, got {self.jobs}"),
            (
                self.jobs_per_round >= 1,
                f"jobs per round must be at least 1, got {self.jobs_per_round}",
            ),
            (
                self.validators >= c.DEFAULT_COMMITTEE_SIZE + 2,
                f"validators must be at least {c.DEFAULT_COMMITTEE_SIZE + 2} (an auditor, another "
                f"accuser and a committee of {c.DEFAULT_COMMITTEE_SIZE}), got {self.validators}",
            ),
            (
                0 <= self.lazy_validators < self.validators,
                f"lazy validators must be between 0 and validators - 1, got {self.lazy_validators}",
            ),
            (self.threads >= 1, f"threads must be at least 1, got {self.threads}"),
            (bool(self.models), "at least one model is needed"),
            (
                all(m in zoo.ZOO_NAMES for m in self.models),
                f"models must come from {list(zoo.ZOO_NAMES)}, got {list(self.models)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise DemoConfigError(message)
        for name in ("cheat_rate_ppm", "sample_ppm", "canary_rate_ppm"):
            try:
                check_rate_ppm(getattr(self, name))
            except ValueError as exc:
                raise DemoConfigError(f"{name}: {exc}") from exc
        if self.sample_ppm == 0:
            raise DemoConfigError("sample rate p must be above 0: nothing would ever be checked")


@dataclass
class NodeReport:
    name: str
    node_id: str
    cheater: bool
    jobs: int = 0
    cheated: int = 0
    sampled: int = 0
    mismatches: int = 0
    stake_before: int = 0
    stake_after: int = 0
    earnings: int = 0
    slashed_out: bool = False

    offences: int = 0

    @property
    def slashed(self) -> bool:
        return self.offences > 0 or self.stake_after < self.stake_before


@dataclass
class DemoSummary:
    config: DemoConfig
    nodes: list[NodeReport]
    jobs: int = 0
    sampled: int = 0
    disputes: int = 0
    disputes_fraud: int = 0
    disputes_valid: int = 0
    inconclusive: int = 0
    validators_slashed: int = 0
    inference_seconds: float = 0.0
    verification_seconds: float = 0.0
    wall_seconds: float = 0.0
    rounds: int = 0
    ledger_events: int = 0
    burned: int = 0
    supply_conserved: bool = False
    params: dict[str, int] = field(default_factory=dict)
    canaries: int = 0
    """Canary jobs the operator planted and recorded."""
    canaries_sampled: int = 0
    canaries_caught: int = 0
    """Sampled canaries an honest auditor accused and a committee confirmed."""
    lazy_slashed: int = 0
    """Validators slashed for calling a wrong output VALID (a canary or a confirmed fraud)."""

    @property
    def cheaters(self) -> int:
        return sum(n.cheater for n in self.nodes)

    @property
    def cheaters_slashed(self) -> int:
        return sum(n.cheater and n.slashed for n in self.nodes)

    @property
    def honest_slashed(self) -> int:
        return sum((not n.cheater) and n.slashed for n in self.nodes)

    @property
    def verification_overhead(self) -> float:
        """Verification compute ÷ inference compute (re-execution and inference wall time)."""
        return self.verification_seconds / self.inference_seconds if self.inference_seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "jobs": self.jobs,
            "sampled": self.sampled,
            "cheaters": self.cheaters,
            "cheaters_slashed": self.cheaters_slashed,
            "honest_slashed": self.honest_slashed,
            "validators_slashed": self.validators_slashed,
            "verification_overhead": round(self.verification_overhead, 4),
            "cheated_jobs": sum(n.cheated for n in self.nodes),
            "mismatches": sum(n.mismatches for n in self.nodes),
            "disputes": self.disputes,
            "disputes_fraud": self.disputes_fraud,
            "disputes_valid": self.disputes_valid,
            "inconclusive": self.inconclusive,
            "inference_seconds": round(self.inference_seconds, 4),
            "verification_seconds": round(self.verification_seconds, 4),
            "wall_seconds": round(self.wall_seconds, 3),
            "rounds": self.rounds,
            "ledger_events": self.ledger_events,
            "burned": self.burned,
            "supply_conserved": self.supply_conserved,
            "canaries": self.canaries,
            "canaries_sampled": self.canaries_sampled,
            "canaries_caught": self.canaries_caught,
            "lazy_validators_slashed": self.lazy_slashed,
            "sample_ppm": self.config.sample_ppm,
            "cheat_rate_ppm": self.config.cheat_rate_ppm,
            "seed": self.config.seed,
            "params": self.params,
            "nodes": [
                {
                    "name": n.name,
                    "node_id": n.node_id,
                    "cheater": n.cheater,
                    "jobs": n.jobs,
                    "cheated": n.cheated,
                    "sampled": n.sampled,
                    "mismatches": n.mismatches,
                    "stake_before": n.stake_before,
                    "stake_after": n.stake_after,
                    "earnings": n.earnings,
                    "slashed_out": n.slashed_out,
                }
                for n in self.nodes
            ],
        }


def demo_params(sample_ppm: int) -> LedgerParams:
    """Genesis parameters: the defaults, with p from the demo and S fitted to it."""
    base = LedgerParams.default()
    try:
        return safe_params(LedgerParams(**{**base.__dict__, "sample_ppm": sample_ppm}))
    except MalformedMessage as exc:
        raise DemoConfigError(f"p = {sample_ppm / PPM:g}: {exc}") from exc


def _key(seed: int, role: str, index: int) -> SigningKey:
    return SigningKey.derive(f"demo/{seed}/{role}/{index}")


class DemoNetwork:
    """Every party of the demo and the ledger they share."""

    def __init__(self, config: DemoConfig, workdir: Path) -> None:
        self.config = config
        runtime = DeterministicRuntime(threads=config.threads)
        registry = ModelRegistry(workdir / "registry")
        substitutes: dict[bytes, nn.Module] = {}
        self.example_inputs: dict[bytes, Callable[[int], torch.Tensor]] = {}
        self.model_ids: list[bytes] = []
        mode, names = ("llm", LLM_DEMO_MODELS) if config.llm else (None, config.models)
        for index, name in enumerate(names):
            built = zoo.build(name, seed=config.seed * 100 + index)
            directory = workdir / "models" / name
            save_model(directory, built.module, built.kind, built.config)
            entry = registry.add(directory, mode=mode, name=name)
            if entry.mode == TENSOR_MODE:  # this machine's honest variation (threads, batches)
                tolerances = calibrate_tensor(directory, jobs=DEMO_CALIBRATION_JOBS,
                                              isa_paths=False, threads=(config.threads,),
                                              batch_sizes=(1, DEMO_CALIBRATION_JOBS))
                registry.update_params(entry.model_id, {TENSOR_KEY: tolerances})
            # The cheater's "cheaper model": same architecture, other weights
            cheap = zoo.build(name, seed=config.seed * 100 + index + 50)
            substitutes[entry.model_id] = cheap.module
            self.example_inputs[entry.model_id] = built.example_input
            self.model_ids.append(entry.model_id)
        models = load_registered_models(registry)
        llms = load_registered_llms(registry)
        tensors = load_registered_tensors(registry)

        self.nodes: list[InferenceNode] = []
        self.reports: list[NodeReport] = []
        for i in range(config.nodes):
            cheater = i >= config.nodes - config.cheaters
            cheat = (
                SubstituteModel(substitutes, config.cheat_rate_ppm, seed=config.seed + i)
                if cheater
                else None
            )
            node = InferenceNode(_key(config.seed, "node", i), models, runtime, cheat, llms,
                                 tensors=tensors)
            self.nodes.append(node)
            self.reports.append(
                NodeReport(name=f"node-{i}", node_id=node.node_id.hex()[:12], cheater=cheater)
            )
        # The operator's canary node: ordinary-looking, its every output deliberately wrong
        every_job = SubstituteModel(substitutes, PPM, seed=config.seed + 99)
        self.canary_node = InferenceNode(_key(config.seed, "node", config.nodes), models,
                                         runtime, every_job, llms, tensors=tensors)
        self.validators = [
            Validator(_key(config.seed, "validator", i), models, runtime, llms, tensors=tensors)
            for i in range(config.validators)
        ]
        self.by_validator_id = {v.validator_id: v for v in self.validators}
        self.lazy = {v.validator_id for v in self.validators[config.validators
                                                             - config.lazy_validators:]}
        self.clients = [_key(config.seed, "client", i) for i in range(CLIENTS)]
        beacon_secret = int.from_bytes(sha256(f"demo/{config.seed}/beacon".encode()), "big")
        self.beacon = DevnetBeacon(beacon_secret % (2**250) + 1)
        self.ledger = Ledger.open(workdir / "ledger.sqlite")
        self.params = demo_params(config.sample_ppm)
        self.fee = self.params.reward + self.params.verification_fee
        self.inference_seconds = 0.0
        self.served: dict[bytes, tuple[InferenceNode, Commitment]] = {}
        self.node_index = {n.node_id: i for i, n in enumerate(self.nodes)}
        self.chain_id = b""
        self.canaries: dict[bytes, bytes] = {}
        """Canary job id → the salt of its commitment, until revealed."""
        self.planted: list[tuple[bytes, JobRequest]] = []
        """Canaries committed to this round, recorded next round: (salt, request)."""
        self.canary_summary = DemoSummary(config=config, nodes=[])

    # -- genesis -----------------------------------------------------------------------------------
    def genesis(self) -> None:
        self.ledger.append(RegisterBeacon(public_key=self.beacon.public_key, first_round=0))
        self.ledger.append(SetParams(params=self.params))
        assert self.ledger.state.chain_id is not None
        self.chain_id = self.ledger.state.chain_id
        canary_jobs = self.config.jobs * self.config.canary_rate_ppm // PPM + 1
        for client in self.clients:
            self.ledger.append(Mint(account=client.public.raw,
                                    amount=self.fee * (self.config.jobs + canary_jobs)))
        for node in (*self.nodes, self.canary_node):
            self.ledger.append(Mint(account=node.node_id, amount=NODE_BOND))
            self.ledger.append(Bond(account=node.node_id, role=c.NODE, amount=NODE_BOND))
        for validator in self.validators:
            self.ledger.append(Mint(account=validator.validator_id,
                                    amount=VALIDATOR_BOND + VALIDATOR_FLOAT))
            self.ledger.append(
                Bond(account=validator.validator_id, role=c.VALIDATOR, amount=VALIDATOR_BOND)
            )
        self.advance_round()

    def advance_round(self) -> int:
        """Reveal the next beacon round, check its BLS signature, and log it."""
        state = self.ledger.state
        revealed = self.beacon.reveal(state.current_round + 1)
        if not self.beacon.verify(revealed):
            raise RuntimeError(f"beacon round {revealed.round} does not verify")
        self.ledger.append(
            BeaconRound(
                round=revealed.round, signature=revealed.signature, randomness=revealed.randomness
            )
        )
        return revealed.round

    # -- jobs --------------------------------------------------------------------------------------
    def active_nodes(self) -> list[int]:
        """Nodes the ledger takes jobs from: bonded, not jailed, not slashed out, with room for
        one more job in flight."""
        state = self.ledger.state
        return [i for i, n in enumerate(self.nodes)
                if is_bonded(state, n.node_id, c.NODE) and self.has_room(n)]

    def has_room(self, node: InferenceNode) -> bool:
        state = self.ledger.state
        stake = state.accounts[node.node_id].node.amount
        limit = stake * PPM // (self.params.sample_ppm * self.params.fraud_slash)
        return state.node_jobs.get(node.node_id, 0) < limit

    def request(self, index: int, node: InferenceNode, client: SigningKey,
                rng: random.Random, nonce: int) -> JobRequest:
        model_id = self.model_ids[index % len(self.model_ids)]
        params: tuple[tuple[str, int | str | bytes], ...] = ()
        if self.config.llm:
            job = LLMJob(LLM_DEMO_NEW_TOKENS, "float32", SamplingParams(seed=rng.randrange(2**63)))
            params = tuple(job.to_params().items())
        return JobRequest(
            model_id=model_id,
            input=Tensor.from_torch(self.example_inputs[model_id](rng.randrange(2**31))),
            client=client.public.raw,
            node=node.node_id,
            nonce=nonce,
            fee=self.fee,
            expiry_round=self.ledger.state.current_round + EXPIRY_ROUNDS,
            chain_id=self.chain_id,
            params=params,
        ).signed(client)

    def record(self, node: InferenceNode, request: JobRequest) -> Commitment:
        result = node.handle(request)
        self.inference_seconds += result.seconds
        self.ledger.append(
            RecordJob(request=request.encode(), commitment=result.commitment.encode())
        )
        self.served[request.job_id] = (node, result.commitment)
        return result.commitment

    def submit(self, index: int, rng: random.Random) -> bytes | None:
        """One client job to the next active node; returns the job id, or None if none is left."""
        active = self.active_nodes()
        if not active:
            return None
        node_index = active[index % len(active)]
        node = self.nodes[node_index]
        request = self.request(index, node, self.clients[index % len(self.clients)], rng, index)
        self.record(node, request)
        report = self.reports[node_index]
        report.jobs += 1
        if node.cheat is not None and request.job_id in node.cheat.cheated:
            report.cheated += 1
        return request.job_id

    # -- canaries ----------------------------------------------------------------------------------
    def plant_canaries(self, count: int, rng: random.Random) -> None:
        """Commit to this round's canaries; their jobs are recorded next round."""
        for _ in range(count):
            index = self.config.jobs + self.canary_summary.canaries + len(self.planted)
            client = self.clients[index % len(self.clients)]
            request = self.request(index, self.canary_node, client, rng, index)
            salt = sha256(f"demo/{self.config.seed}/canary/{index}".encode())
            self.ledger.append(PlantCanary(digest=canary_digest(salt, request.job_id)))
            self.planted.append((salt, request))

    def record_canaries(self) -> None:
        """Record the canaries planted last round, if the canary node may take them."""
        for salt, request in self.planted:
            try:
                self.record(self.canary_node, request)
            except LedgerRuleError:
                continue  # jailed, out of room, or the request expired: this canary is lost
            self.canaries[request.job_id] = salt
            self.canary_summary.canaries += 1
        self.planted = []

    def reveal_canaries(self) -> None:
        """Open the commitment of every canary that is final: VALID on it was lazy."""
        state = self.ledger.state
        for job_id, salt in list(self.canaries.items()):
            job = state.jobs[job_id]
            if job.status is JobStatus.PENDING:
                continue
            self.canary_summary.canaries_sampled += job.sampled
            self.canary_summary.canaries_caught += job.status is JobStatus.REFUNDED
            self.ledger.append(RevealCanary(job_id=job_id, salt=salt))
            del self.canaries[job_id]

    # -- validators --------------------------------------------------------------------------------
    def bonded_validators(self) -> list[bytes]:
        state = self.ledger.state
        return [v for v in state.accounts if is_bonded(state, v, c.VALIDATOR)]

    def finding(self, validator: Validator, job_id: bytes, round_: int,
                vote: bool) -> Attestation | Evidence:
        """What ``validator`` signs for the job: a re-execution's verdict, or, if it is lazy, a
        VALID it never checked."""
        node, commitment = self.served[job_id]
        if validator.validator_id in self.lazy:
            return Attestation(
                job_id=job_id, commitment_id=commitment.content_id,
                validator=validator.validator_id, verdict=Verdict.VALID, beacon_round=round_,
                chain_id=commitment.chain_id,
            ).signed(validator.key)
        request, output = node.job_data(job_id)  # the validator's fetch
        if vote:
            return validator.vote(request, commitment, round_, output)
        return validator.audit(request, commitment, round_, output)

    def do_duties(self) -> None:
        """Every validator does what the ledger awaits from it, as ``duties`` tells a service:
        committee members vote, then assigned auditors audit."""
        state = self.ledger.state
        for dispute_id in sorted(state.open_disputes):
            dispute = self.ledger.state.disputes[dispute_id]
            if dispute.drawn_round is None:
                continue
            for member in dispute.committee:
                if not self.ledger.state.disputes[dispute_id].is_open:
                    break
                vote = self.finding(self.by_validator_id[member], dispute.job_id,
                                    dispute.drawn_round, vote=True)
                self.ledger.append(Attest(attestation=vote.encode()))
        for job_id in sorted(self.ledger.state.open_audits):
            job = self.ledger.state.jobs[job_id]
            if job.auditor is None or job.assigned_round is None:
                continue
            finding = self.finding(self.by_validator_id[job.auditor], job_id,
                                   job.assigned_round, vote=False)
            if isinstance(finding, Evidence):
                node, _ = self.served[job_id]
                if node is not self.canary_node:
                    self.reports[self.node_index[node.node_id]].mismatches += 1
                self.ledger.append(Accuse(evidence=finding.encode()))
            else:
                self.ledger.append(Attest(attestation=finding.encode()))

    def step(self) -> None:
        """The next round is revealed, then every party acts on it."""
        self.advance_round()
        self.record_canaries()
        self.do_duties()
        self.reveal_canaries()

    def close(self) -> None:
        self.ledger.close()


def run_demo(
    config: DemoConfig,
    workdir: Path | None = None,
    on_job: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Run the demo network; ``workdir`` keeps the registry and ledger (a temp dir otherwise)."""
    with tempfile.TemporaryDirectory(prefix="assay-demo-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        net = DemoNetwork(config, root)
        try:
            net.genesis()
            stake_before = {
                n.node_id: net.ledger.state.accounts[n.node_id].node.amount for n in net.nodes
            }
            balance_before = {
                n.node_id: net.ledger.state.accounts[n.node_id].balance for n in net.nodes
            }
            rng = random.Random(config.seed)
            canary_rng = random.Random(config.seed + 1)
            submitted = 0
            while submitted < config.jobs:
                batch = min(config.jobs_per_round, config.jobs - submitted)
                for _ in range(batch):
                    net.submit(submitted, rng)
                    submitted += 1
                    if on_job is not None:
                        on_job(1)
                canaries = sum(canary_rng.randrange(PPM) < config.canary_rate_ppm
                               for _ in range(batch))
                net.plant_canaries(canaries, canary_rng)
                net.step()
            for _ in range(c.MAX_STAMP_LEAD):
                if not any(j.status is JobStatus.PENDING for j in net.ledger.state.jobs.values()) \
                        and not net.canaries:
                    break
                net.step()
            return _summarise(net, stake_before, balance_before, time.perf_counter() - started)
        finally:
            net.close()


def _summarise(
    net: DemoNetwork,
    stake_before: dict[bytes, int],
    balance_before: dict[bytes, int],
    wall: float,
) -> DemoSummary:
    state = net.ledger.state
    for node, report in zip(net.nodes, net.reports, strict=True):
        account = state.accounts[node.node_id]
        report.stake_before = stake_before[node.node_id]
        report.stake_after = account.node.amount
        report.earnings = account.balance + account.locked_total - balance_before[node.node_id]
        report.slashed_out = account.node.slashed_out
        report.offences = account.node.offences
        report.sampled = sum(1 for j in state.jobs.values() if j.node == node.node_id and j.sampled)
    counters = state.counters
    summary = DemoSummary(
        config=net.config,
        nodes=net.reports,
        jobs=sum(r.jobs for r in net.reports),
        sampled=sum(r.sampled for r in net.reports),
        disputes=counters.disputes_opened,
        disputes_fraud=counters.disputes_fraud,
        disputes_valid=counters.disputes_valid,
        inconclusive=sum(v.stats.verdicts[Verdict.INCONCLUSIVE] for v in net.validators),
        validators_slashed=sum(
            state.accounts[v.validator_id].validator.offences > 0
            for v in net.validators if v.validator_id not in net.lazy
        ),
        inference_seconds=net.inference_seconds,
        verification_seconds=sum(v.stats.seconds for v in net.validators),
        wall_seconds=wall,
        rounds=state.current_round,
        ledger_events=net.ledger.verify(),
        burned=state.burned,
        supply_conserved=state.total_supply() == state.minted,
        params={
            "sample_ppm": net.params.sample_ppm,
            "fraud_slash": net.params.fraud_slash,
            "committee_size": net.params.committee_size,
            "challenge_window": net.params.challenge_window,
            "reward": net.params.reward,
            "verification_fee": net.params.verification_fee,
        },
        canaries=net.canary_summary.canaries,
        canaries_sampled=net.canary_summary.canaries_sampled,
        canaries_caught=net.canary_summary.canaries_caught,
        lazy_slashed=sum(state.accounts[v].validator.offences > 0 for v in net.lazy),
    )
    return summary


# -- the zk path (`assay demo --zk`) ---------------------------------------------------------------

ZK_FORGER_BOND = 2 * NODE_BOND
"""The forger bonds enough to pay a slash for each of its forgeries and stay above the minimum."""


@dataclass
class ZkDemoSummary:
    """Every zk job's proof checked; each forged proof caught as INVALID_PROOF and slashed."""

    jobs: int = 0
    forged: int = 0
    valid: int = 0
    caught: int = 0
    missed: int = 0
    honest_flagged: int = 0
    logrows: int = 0
    setup_seconds: float = 0.0
    prove_seconds: list[float] = field(default_factory=list)
    verify_seconds: list[float] = field(default_factory=list)
    proof_bytes: int = 0
    reasons: list[str] = field(default_factory=list)
    evidence_accepted: int = 0
    """INVALID_PROOF evidence the ledger re-checked and slashed on."""
    forger_stake_before: int = 0
    forger_stake_after: int = 0
    forger_jailed: bool = False
    honest_earnings: int = 0
    honest_stake_lost: int = 0
    ledger_events: int = 0
    supply_conserved: bool = False

    @property
    def forger_slashed(self) -> int:
        return self.forger_stake_before - self.forger_stake_after

    def to_json(self) -> dict[str, object]:
        return {
            "jobs": self.jobs,
            "forged": self.forged,
            "valid": self.valid,
            "caught": self.caught,
            "missed": self.missed,
            "honest_flagged": self.honest_flagged,
            "logrows": self.logrows,
            "setup_seconds": round(self.setup_seconds, 3),
            "prove_seconds_mean": round(
                sum(self.prove_seconds) / max(1, len(self.prove_seconds)), 3
            ),
            "verify_ms_mean": round(1000 * sum(self.verify_seconds) / max(1, self.jobs), 2),
            "proof_bytes": self.proof_bytes,
            "reasons": self.reasons,
            "evidence_accepted": self.evidence_accepted,
            "forger_stake_before": self.forger_stake_before,
            "forger_stake_after": self.forger_stake_after,
            "forger_slashed": self.forger_slashed,
            "forger_jailed": self.forger_jailed,
            "honest_earnings": self.honest_earnings,
            "honest_stake_lost": self.honest_stake_lost,
            "ledger_events": self.ledger_events,
            "supply_conserved": self.supply_conserved,
        }


def run_zk_demo(jobs: int = 4, seed: int = 7, workdir: Path | None = None) -> ZkDemoSummary:
    """Two nodes prove every job of a small MLP; one forges every other proof it sends.

    The forger serves a cheaper model's output with a proof it already has —
    for another input, or for another output — which a sampled network would
    miss with probability 1−p; here every proof is checked, each forgery
    becomes signed INVALID_PROOF evidence, and the ledger re-checks the proof
    under the registered verifying key and slashes the forger on the evidence
    alone (no committee), jails it and refunds the client. Jobs of one round
    are recorded, then checked. Uses a devnet SRS (testing only).
    """
    import warnings

    from prover.node import tensor_hash
    from prover.zk import (
        SETTINGS_FILE,
        SMALL_MLP_CONFIG,
        VK_FILE,
        DevnetSrsWarning,
        ZkArtifactStore,
        ZkProof,
        ZkProver,
        small_mlp,
    )
    from slashing import AccuseInvalidProof, RegisterZkModel, install_proof_checker
    from verifier.zk import LedgerProofChecker, ZkKey

    with tempfile.TemporaryDirectory(prefix="assay-zk-demo-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        registry = ModelRegistry(root / "registry")
        module = small_mlp(seed, SMALL_MLP_CONFIG)
        save_model(root / "models" / "zk-mlp", module, "mlp", dict(SMALL_MLP_CONFIG))
        entry = registry.add(root / "models" / "zk-mlp", mode="zk", name="zk-mlp")
        inputs = [zoo.example_input("mlp", SMALL_MLP_CONFIG, seed + i) for i in range(8)]
        started = time.perf_counter()
        store = ZkArtifactStore(root / "zk")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DevnetSrsWarning)  # the CLI says it, once
            artifacts = store.setup(entry.model_id, module, inputs)
        entry = registry.update_params(entry.model_id, artifacts.registry_params())
        summary = ZkDemoSummary(logrows=artifacts.logrows)
        summary.setup_seconds = time.perf_counter() - started
        prover = ZkProver(artifacts)
        honest = InferenceNode(_key(seed, "zk-node", 0), {}, zk_provers={entry.model_id: prover})
        forger = InferenceNode(_key(seed, "zk-node", 1), {}, zk_provers={entry.model_id: prover})
        validator = Validator(
            _key(seed, "zk-validator", 0), {},
            zk_keys={entry.model_id: ZkKey.from_artifacts(artifacts, entry.params)},
        )
        client = _key(seed, "zk-client", 0)
        beacon_secret = int.from_bytes(sha256(f"demo/{seed}/zk-beacon".encode()), "big")
        beacon = DevnetBeacon(beacon_secret % (2**250) + 1)
        params = demo_params(c.DEFAULT_SAMPLE_PPM)
        fee = params.reward + params.verification_fee
        previous_checker = install_proof_checker(LedgerProofChecker(store))
        ledger = Ledger.open(root / "ledger.sqlite")
        try:

            def advance_round() -> None:
                revealed = beacon.reveal(ledger.state.current_round + 1)
                if not beacon.verify(revealed):
                    raise RuntimeError(f"beacon round {revealed.round} does not verify")
                ledger.append(BeaconRound(revealed.round, revealed.signature, revealed.randomness))

            ledger.append(RegisterBeacon(public_key=beacon.public_key, first_round=0))
            ledger.append(SetParams(params=params))
            ledger.append(
                RegisterZkModel(
                    model_id=entry.model_id,
                    verifying_key=artifacts.path(VK_FILE).read_bytes(),
                    settings=artifacts.path(SETTINGS_FILE).read_bytes(),
                    srs_sha256=artifacts.srs_sha256,
                )
            )
            ledger.append(Mint(account=client.public.raw, amount=fee * jobs))
            for node, bond in ((honest, NODE_BOND), (forger, ZK_FORGER_BOND)):
                ledger.append(Mint(account=node.node_id, amount=bond))
                ledger.append(Bond(account=node.node_id, role=c.NODE, amount=bond))
            ledger.append(Mint(account=validator.validator_id, amount=VALIDATOR_BOND))
            ledger.append(
                Bond(account=validator.validator_id, role=c.VALIDATOR, amount=VALIDATOR_BOND)
            )
            advance_round()
            chain_id = ledger.state.chain_id
            assert chain_id is not None
            summary.forger_stake_before = ledger.state.accounts[forger.node_id].node.amount
            start = ledger.state.accounts[honest.node_id]
            honest_balance = start.balance + start.locked_total
            cheap = small_mlp(seed + 50, SMALL_MLP_CONFIG)
            last_proof: dict[bytes, bytes] = {}
            served: list[tuple[JobRequest, Commitment, bool]] = []
            for index in range(jobs):
                node = (honest, forger)[index % 2]
                request = JobRequest(
                    model_id=entry.model_id,
                    input=Tensor.from_torch(
                        zoo.example_input("mlp", SMALL_MLP_CONFIG, 1000 + index)
                    ),
                    client=client.public.raw, node=node.node_id, nonce=index, fee=fee,
                    expiry_round=ledger.state.current_round + EXPIRY_ROUNDS, chain_id=chain_id,
                ).signed(client)
                forging = node is forger and node.node_id in last_proof and index % 4 == 3
                if forging:
                    # an earlier job's proof, replayed with its own output (a proof for another
                    # input), or dressing the cheaper model's output (a proof for another output)
                    if summary.forged % 2 == 0:
                        output = ZkProof.decode(last_proof[node.node_id]).output_tensor()
                    else:
                        with torch.inference_mode():
                            output = Tensor.from_torch(cheap(request.input.to_torch()))
                    commitment = Commitment(
                        job_id=request.job_id, model_id=entry.model_id,
                        input_hash=tensor_hash(request.input), output_hash=tensor_hash(output),
                        node=node.node_id, chain_id=chain_id, mode="zk",
                        aux=last_proof[node.node_id],
                    ).signed(node.key)
                    summary.forged += 1
                else:
                    result = node.handle(request)
                    commitment = result.commitment
                    summary.prove_seconds.append(result.seconds)
                    last_proof[node.node_id] = commitment.aux
                    summary.proof_bytes = len(ZkProof.decode(commitment.aux).proof)
                ledger.append(RecordJob(request=request.encode(), commitment=commitment.encode()))
                served.append((request, commitment, forging))
                summary.jobs += 1
            advance_round()
            for request, commitment, forging in served:
                job = ledger.state.jobs[request.job_id]
                assert job.auditor == validator.validator_id and job.assigned_round is not None
                before = validator.stats.seconds
                finding = validator.audit(request, commitment, job.assigned_round)
                summary.verify_seconds.append(validator.stats.seconds - before)
                if isinstance(finding, Evidence):
                    summary.reasons.append(finding.detail)
                    summary.caught += forging
                    summary.honest_flagged += not forging
                    ledger.append(
                        AccuseInvalidProof(evidence=finding.encode(), request=request.encode())
                    )
                    summary.evidence_accepted += 1
                else:
                    summary.valid += finding.verdict is Verdict.VALID
                    summary.missed += forging
            for _ in range(params.challenge_window + 2):
                advance_round()
            state = ledger.state
            forger_stake = state.accounts[forger.node_id].node
            summary.forger_stake_after = forger_stake.amount
            summary.forger_jailed = (
                forger_stake.jailed_until is not None
                and state.current_round < forger_stake.jailed_until
            )
            # earnings are locked (slashable) for the unbonding period once a job settles
            end = state.accounts[honest.node_id]
            summary.honest_earnings = end.balance + end.locked_total - honest_balance
            summary.honest_stake_lost = NODE_BOND - state.accounts[honest.node_id].node.amount
            summary.supply_conserved = state.total_supply() == state.minted
            summary.ledger_events = ledger.verify()
        finally:
            ledger.close()
            install_proof_checker(previous_checker)
        return summary
