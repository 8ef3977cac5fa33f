"""Settlement on an EVM chain: the ledger service's events settled on the ledger contracts.

:class:`ChainSettlement` is the ``"evm"`` backend of :class:`slashing.settlement.Settlement`.
It keeps the SQLite event log (:class:`slashing.store.Ledger`) as its admission
check and index: the Python rules check what the chain cannot (Ed25519
signatures, chain ids, nonces, request expiry) and the log serves job data and
duties. Every event the rules accept is then settled on
:class:`slashing.evm.ledger.EvmLedger` in log order, by one worker thread, so
the service never waits on the chain:

* a job (``RecordJob``) waits for the end of its round; the node's jobs of the
  round then go on chain as one Merkle root (``postBatch``), and each job is
  recorded by its client proving its leaf and paying the fee;
* a beacon round is verified on chain (``DevnetBeacon.submitRound``) and
  processed (``advance``) once the closing round's batches are in;
* mints, bonds, unbonds, withdrawals, attestations, mismatch accusations,
  availability reports, served outputs and canaries are sent as they come.

Accounts are chain addresses. The service relays: it holds one chain key per
account (:class:`ChainAccounts`, keystores under the operator's password), made
the first time the account appears, given gas by the operator and registered
with the account's protocol key, so the draws rank it as the rules do. The
operator's own key mints, verifies rounds and plants canaries. The chain never
refuses what the rules accepted in the same order, but it records a round's
jobs when the round closes, after the other transactions of that round; and
anyone holding an account's chain key can send transactions the log never
saw. A refusal is logged at WARNING with the contract's named error
(``BatchAlreadyPosted(node, round)``, ``NotBonded(…)``) and counted; the worker
goes on with the next event. A round's jobs wait in memory until the round
closes, so a service stopped mid-round does not settle that round's jobs on
chain; at start, rounds the log has and the chain lacks are verified and
processed first. Zk models and ``INVALID_PROOF`` and equivocation
evidence are not carried: the chain judges those from leaves and a verifier
contract that this relay does not post (it logs that it skipped them).
``RECORD`` evidence is not carried either: the contracts do not yet judge a
dispute on a node's record, so such a dispute is decided on the log only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from protocol.beacon import DevnetBeacon
from protocol.messages import Offence
from slashing.events import (
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
)
from slashing.evm.chain import Chain
from slashing.evm.keys import ChainKeyError, load_keystore, write_keystore
from slashing.evm.ledger import EvmLedger, leaf, params_tuple
from slashing.evm.merkle import JobBatch, JobLeaf
from slashing.evm.points import g1_uncompressed
from slashing.rules import LedgerRuleError
from slashing.state import LedgerParams, State
from slashing.store import Ledger, LogEntry

log = logging.getLogger("assay.ledger.chain")

GAS_FUNDING_WEI = 100 * 10**18
"""What the operator sends a new account to pay for its transactions (100 ether: a few
hundred thousand transactions at anvil's gas price)."""
CONNECT_TIMEOUT_S = 5.0
NO_HASH = bytes(32)
"""An evidence's empty observed hash as the contract's ``bytes32``: no hash, which no
committed output hash equals, as in the rules."""


class ChainConfigError(ValueError):
    """Chain settings that cannot be used; the message names the setting. Nothing changed."""


@dataclass(frozen=True)
class ChainSettings:
    """The ``ledger_backend = "evm"`` settings of the ledger service."""

    rpc_url: str
    ledger_contract: str
    beacon_contract: str
    operator: LocalAccount
    password: str
    """The operator keystore's password; the relayed accounts' keystores use it too."""
    scrypt_n: int
    accounts_dir: Path


def operator_scrypt_n(keystore: Path) -> int:
    """The scrypt cost of the operator's keystore, which the relayed accounts' keystores share."""
    try:
        params = json.loads(keystore.read_text(encoding="utf-8"))["crypto"]["kdfparams"]
        return int(params["n"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainKeyError(f"chain keystore {keystore} has no scrypt cost: {exc}") from None


def connect(settings: ChainSettings, params: LedgerParams, beacon_public_key: bytes) -> EvmLedger:
    """The deployed contracts at the configured addresses, checked against the genesis.

    Each failure names the setting: an ``rpc_url`` no chain answers on, a
    ``ledger_contract`` or ``beacon_contract`` that is not an address or holds
    no contract, a ledger whose beacon is another contract, whose operator is
    not the ``chain_keystore`` key, or whose parameters or beacon key differ
    from the genesis and the ``beacon_secret_file``. Nothing is sent.
    """
    probe = Web3(Web3.HTTPProvider(settings.rpc_url,
                                   request_kwargs={"timeout": CONNECT_TIMEOUT_S}))
    try:
        probe.eth.get_block_number()
    except Exception as exc:
        raise ChainConfigError(f"rpc_url {settings.rpc_url!r}: no chain answers there "
                               f"({type(exc).__name__})") from None
    addresses = {}
    for name in ("ledger_contract", "beacon_contract"):
        value = getattr(settings, name)
        if not value:
            raise ChainConfigError(f"{name} is required when ledger_backend = \"evm\"")
        if not Web3.is_address(value):
            raise ChainConfigError(f"{name} {value!r} is not a 20-byte hex address")
        address = Web3.to_checksum_address(value)
        if not probe.eth.get_code(address):
            raise ChainConfigError(f"{name} {address}: no contract there on {settings.rpc_url}")
        addresses[name] = address
    chain = Chain(settings.rpc_url)
    ledger = EvmLedger(chain, chain.contract("AssayLedger", addresses["ledger_contract"]),
                       chain.contract("DevnetBeacon", addresses["beacon_contract"]))
    try:
        bound_beacon = chain.call(ledger.contract.functions.beacon())
        operator = chain.call(ledger.contract.functions.operator())
        on_chain = tuple(chain.call(ledger.contract.functions.params()))
        beacon_key = bytes(chain.call(ledger.beacon.functions.publicKey()))
    except (LedgerRuleError, ValueError) as exc:
        raise ChainConfigError(f"ledger_contract {addresses['ledger_contract']} is not an "
                               f"AssayLedger with a DevnetBeacon: {exc}") from None
    if bound_beacon != addresses["beacon_contract"]:
        raise ChainConfigError(f"beacon_contract {addresses['beacon_contract']} is not the "
                               f"ledger contract's beacon ({bound_beacon})")
    if operator != settings.operator.address:
        raise ChainConfigError(f"chain_keystore holds {settings.operator.address}, not the "
                               f"ledger contract's operator {operator}")
    for spec, ours, theirs in zip(fields(LedgerParams), params_tuple(params), on_chain,
                                  strict=True):
        if ours != theirs:
            raise ChainConfigError(f"ledger_contract's {spec.name} is {theirs}; the genesis "
                                   f"[params] make it {ours}")
    if beacon_key != g1_uncompressed(beacon_public_key):
        raise ChainConfigError(f"beacon_contract {addresses['beacon_contract']} verifies "
                               "another key than the beacon_secret_file's")
    return ledger


class ChainAccounts:
    """One chain key per protocol account, kept as keystores in ``directory``."""

    def __init__(self, ledger: EvmLedger, settings: ChainSettings) -> None:
        self.ledger = ledger
        self.settings = settings
        self._keys: dict[bytes, LocalAccount] = {}

    def path(self, account: bytes) -> Path:
        return self.settings.accounts_dir / f"{account.hex()}.json"

    def of(self, account: bytes) -> LocalAccount:
        """The account's chain key: loaded, or made, funded with gas and registered."""
        known = self._keys.get(account)
        if known is not None:
            return known
        path = self.path(account)
        if path.exists():
            key = load_keystore(path, self.settings.password)
        else:
            from eth_account import Account

            key = Account.create()
            write_keystore(path, key, self.settings.password, self.settings.scrypt_n)
        chain = self.ledger.chain
        if chain.w3.eth.get_balance(key.address) < GAS_FUNDING_WEI // 10:
            chain.transfer(key.address, GAS_FUNDING_WEI, self.settings.operator)
        if not self.ledger.account(key.address).key.strip(b"\x00"):
            self.ledger.register(account, key.address, self.settings.operator)
        self._keys[account] = key
        return key


@dataclass(frozen=True)
class _Job:
    client: bytes
    leaf: JobLeaf
    model_id: bytes
    fee: int


class ChainSettlement:
    """The log for admission and queries; the chain for settlement (module docstring)."""

    def __init__(self, log_ledger: Ledger, ledger: EvmLedger, settings: ChainSettings,
                 beacon: DevnetBeacon) -> None:
        self.log = log_ledger
        self.chain = ledger
        self.settings = settings
        self.beacon = beacon
        self.accounts = ChainAccounts(ledger, settings)
        self.refused = 0
        """Transactions the chain refused (each logged with its named error)."""
        self.settled = 0
        state = log_ledger.state
        self._round = state.current_round
        chain_round = ledger.current_round()
        if chain_round > self._round:
            raise ChainConfigError(
                f"ledger_contract is at round {chain_round}, past the log's {self._round}: "
                "it settles another log"
            )
        self._pending: dict[tuple[bytes, int], list[_Job]] = {}
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        for number in range(chain_round + 1, self._round + 1):
            beacon.reveal(number)  # here, before the worker reads it
            self._work.put(lambda number=number: self._advance(number))  # type: ignore[misc]
        self._thread = threading.Thread(target=self._run, name="chain-settlement", daemon=True)
        self._thread.start()

    # -- Settlement ----------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.log.state

    @property
    def length(self) -> int:
        return self.log.length

    def events(self, after: int = 0) -> Iterator[LogEntry]:
        return self.log.events(after)

    def append(self, event: Event) -> LogEntry:
        entry = self.log.append(event)
        if isinstance(event, BeaconRound):
            self._round = event.round
        round_number = self._round
        self._work.put(lambda: self._settle(event, round_number))
        return entry

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=60)
        self.log.close()

    def wait_settled(self) -> None:
        """Block until every event appended so far has been sent to the chain."""
        self._work.join()

    # -- the worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            task = self._work.get()
            try:
                if task is None:
                    return
                task()
            except LedgerRuleError as exc:
                self.refused += 1
                log.warning("the chain refused a transaction: %s", exc)
            except Exception as exc:  # the chain or the relay failed: logged, never fatal
                self.refused += 1
                log.error("settling on chain failed: %s: %s", type(exc).__name__, exc)
            finally:
                self._work.task_done()

    def _send(self, what: str, send: Callable[[], object]) -> None:
        """One transaction; a refusal is logged by its named error and the worker goes on."""
        try:
            send()
        except LedgerRuleError as exc:
            self.refused += 1
            log.warning("the chain refused %s: %s", what, exc)
            return
        self.settled += 1

    def _settle(self, event: Event, round_number: int) -> None:
        chain, operator, key = self.chain, self.settings.operator, self.accounts.of
        if isinstance(event, Mint):
            address = key(event.account).address
            self._send(f"mint to {address}", lambda: chain.mint(address, event.amount, operator))
        elif isinstance(event, Bond | Unbond):
            send = chain.bond if isinstance(event, Bond) else chain.unbond
            self._send(f"{event.TYPE} of {event.account.hex()[:16]}…",
                       lambda: send(event.role, event.amount, key(event.account)))
        elif isinstance(event, Withdraw):
            self._send(f"withdraw of {event.account.hex()[:16]}…",
                       lambda: chain.withdraw(key(event.account)))
        elif isinstance(event, RecordJob):
            request, commitment = event.request_message, event.commitment_message
            self._pending.setdefault((commitment.node, round_number), []).append(_Job(
                request.client, JobLeaf(commitment.job_id, commitment.content_id,
                                        commitment.output_hash),
                commitment.model_id, request.fee,
            ))
        elif isinstance(event, BeaconRound):
            self._advance(event.round)
        elif isinstance(event, AccuseInvalidProof | RegisterZkModel):
            log.info("not settled on chain: %s (zk verdicts need the model's verifier contract)",
                     event.TYPE)
        elif isinstance(event, Attest):
            attestation = event.attestation_message
            self._send(f"attestation on job {attestation.job_id.hex()[:16]}…", lambda: chain.attest(
                attestation.job_id, attestation.verdict, attestation.beacon_round,
                key(attestation.validator)))
        elif isinstance(event, Accuse):
            self._accuse(event)
        elif isinstance(event, ReportUnavailable):
            self._send(f"availability report on job {event.job_id.hex()[:16]}…",
                       lambda: chain.report_unavailable(event.job_id, key(event.reporter)))
        elif isinstance(event, ServeData):
            self._send(f"served output of job {event.job_id.hex()[:16]}…",
                       lambda: chain.serve_data(event.job_id, event.output, operator))
        elif isinstance(event, PlantCanary):
            self._send("canary", lambda: chain.plant_canary(event.digest, operator))
        elif isinstance(event, RevealCanary):
            self._send(f"canary reveal of job {event.job_id.hex()[:16]}…",
                       lambda: chain.reveal_canary(event.salt, event.job_id, operator))
        elif not isinstance(event, RegisterBeacon | SetParams):  # genesis: checked by connect
            log.info("not settled on chain: %s", event.TYPE)

    def _accuse(self, event: Accuse) -> None:
        evidence = event.evidence_message
        if evidence.offence is not Offence.MISMATCH:
            log.info("not settled on chain: %s evidence on job %s (%s)", evidence.offence,
                     evidence.job_id.hex()[:16],
                     "the contracts judge no record" if evidence.offence is Offence.RECORD
                     else "the chain takes it as two posted leaves")
            return
        observed = evidence.observed_hash or NO_HASH  # an llm audit's evidence names none
        self._send(f"accusation on job {evidence.job_id.hex()[:16]}…", lambda: self.chain.accuse(
            evidence.job_id, observed, evidence.beacon_round, evidence.content_id,
            self.accounts.of(evidence.accuser)))

    def _post_jobs(self, node: bytes, round_number: int, jobs: list[_Job]) -> None:
        """A node's jobs of one round: one root from the node, then each job from its client."""
        node_key = self.accounts.of(node)
        batch = JobBatch.of([job.leaf for job in jobs])
        try:
            self.chain.post_batch(round_number, batch, node_key)
        except LedgerRuleError as exc:
            self.refused += 1
            log.warning("the chain refused node %s…'s batch of %d jobs for round %d: %s; "
                        "those jobs are not settled on chain", node.hex()[:16], len(jobs),
                        round_number, exc)
            return
        self.settled += 1
        for index, job in enumerate(jobs):
            item = leaf(node_key.address, round_number, batch, index)
            client = self.accounts.of(job.client)
            self._send(f"job {job.leaf.job_id.hex()[:16]}…",
                       lambda item=item, job=job, client=client: self.chain.record_job(  # type: ignore[misc]
                           item, job.model_id, job.fee, client))

    def _advance(self, number: int) -> None:
        """Post the batches of the rounds before ``number``, then verify and process it."""
        for (node, round_number) in sorted(k for k in self._pending if k[1] < number):
            self._post_jobs(node, round_number, self._pending.pop((node, round_number)))
        revealed = self.beacon.get(number)  # the service revealed it before logging it
        previous = self.beacon.get(number - 1).signature if number > 0 else b""
        operator = self.settings.operator
        self._send(f"beacon round {number}", lambda: self.chain.submit_devnet_round(
            revealed, operator, previous))
        self._send(f"round {number}", lambda: self.chain.advance(operator))


def open_chain_settlement(log_ledger: Ledger, settings: ChainSettings, params: LedgerParams,
                          beacon: DevnetBeacon) -> ChainSettlement:
    """Connect, check the contracts against the genesis, and settle ``log_ledger`` on them."""
    return ChainSettlement(log_ledger, connect(settings, params, beacon.public_key), settings,
                           beacon)
