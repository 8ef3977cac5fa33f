"""Every constant the ledger rules use, in one table.

Amounts are integer token units and shares are integer basis points
(``BPS`` = the whole), so no float ever touches money. The ``DEFAULT_*``
values are what :meth:`slashing.state.LedgerParams.default` proposes at
genesis; a network may choose others in its ``SetParams`` event, and the
rules refuse any choice that breaks the economic conditions of DESIGN
decision 6.

With the defaults (R = 100, C = 50, p = 5 %, r = 10 %, S = 5 000) the Proof
of Sampling condition ``p(1−r)(R+S) > C`` (Zhang et al., arXiv 2405.00295)
holds by a wide margin, ``0.05·0.9·5 100 ≈ 229 > 50``, and so does the
fabrication bound ``S ≥ R(1−p)/p = 1 900``.

Where a rule or number comes from another network it says so: jail and
tombstone and the unbonding period from Cosmos (x/slashing, x/staking),
whistleblower rewards and self-contained slashing evidence from Ethereum's
consensus specs, canary jobs from Truebit's forced errors.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.codec import MAX_MESSAGE_BYTES

# -- Units -------------------------------------------------------------------------------------
BPS = 10_000
"""Basis points in one whole: a share of ``x`` bps is ``amount * x // BPS``."""

MAX_SUPPLY = 2**64 - 1
"""Mints stop here, so every balance, stake and fee fits the codec's unsigned 64-bit integers."""

# -- Roles and stake ---------------------------------------------------------------------------
NODE = "node"
VALIDATOR = "validator"
ROLES: tuple[str, ...] = (NODE, VALIDATOR)

MIN_STAKE: Mapping[str, int] = {NODE: 10_000, VALIDATOR: 10_000}
"""Least bonded stake to act in a role; a slash below it marks the role slashed out."""
MAX_UNBONDING_ENTRIES = 7
"""Unbonding entries one account may have at once (Cosmos ``MaxEntries``): bounds a slash's work."""

# -- Beacon ------------------------------------------------------------------------------------
BEACON_KEY_SIZES: tuple[int, ...] = (48, 96)
"""Compressed BLS12-381 points: a G1 key (devnet chain) or a G2 key (drand quicknet)."""
BEACON_SIGNATURE_SIZES: tuple[int, ...] = (48, 96)
"""Compressed BLS12-381 signatures: G1 (drand quicknet) or G2 (devnet chain)."""

# -- Network id -------------------------------------------------------------------------------
CHAIN_ID_TAG = b"assay/v1/chain-id\x00"
"""Domain tag of the chain id, ``sha256(tag ‖ RegisterBeacon event ‖ SetParams event)``."""
MAX_STAMP_LEAD = 64
"""Rounds a ``RecordJob``'s stamp may run ahead of the log: more means the beacon feed stalled,
and its missing rounds must be appended first."""

# -- Audits and disputes -----------------------------------------------------------------------
MAX_AUDIT_DRAWS = 3
"""Auditors a sampled job is assigned at most: the first, and one more for each that stayed
silent past its deadline or could not decide. After the last the job settles unaudited."""
MAX_COMMITTEE_DRAWS = 3
"""Committees a dispute draws at most: another is drawn while one reaches no strict majority;
after the last the dispute ends INCONCLUSIVE, which slashes nobody."""

# -- Canaries (forced errors) -----------------------------------------------------------------
CANARY_TAG = b"assay/v1/canary\x00"
"""Domain tag of a canary commitment, ``sha256(tag ‖ salt ‖ job_id)``."""
MAX_CANARY_SALT = 64
"""Bytes; a salt of 32 random bytes is what the operator should use."""

# -- zk models and proofs ------------------------------------------------------------------------
MAX_ZK_KEY_BYTES = MAX_MESSAGE_BYTES
"""Largest verifying key a ``RegisterZkModel`` may log (EZKL keys of the zoo's circuits are
tens of kilobytes: the weights are fixed columns, each committed as one curve point)."""
MAX_ZK_SETTINGS_BYTES = 1024 * 1024
"""Largest circuit settings file (JSON) a ``RegisterZkModel`` may log."""
PROOF_VERDICT_CACHE = 4096
"""Proof re-checks remembered per process, so one piece of INVALID_PROOF evidence costs one
EZKL verification however often the store applies or replays it."""

# -- Signed account transactions ----------------------------------------------------------------
ACCOUNT_TX_TAG_PREFIX = "ledger_"
"""A signed ledger transaction of type ``t`` is signed under the domain ``ledger_<t>``."""

# -- Parameter bounds (a SetParams outside them is malformed) ---------------------------------
MAX_COMMITTEE_SIZE = 101
MAX_CHALLENGE_WINDOW = 10_000
"""Rounds; bounds how long a fee may sit in escrow."""
MAX_UNBONDING_PERIOD = 1_000_000
MAX_JAIL_PERIOD = 1_000_000
MAX_TOMBSTONE_OFFENCES = 255

# -- Genesis defaults --------------------------------------------------------------------------
DEFAULT_SAMPLE_PPM = 50_000
"""p: 5 % of jobs re-executed by a validator."""
DEFAULT_COMMITTEE_SIZE = 5
"""k validators re-execute a disputed job; a strict majority of k decides. Five, so a coalition
needs three committee seats besides its accuser to frame a node: fewer than four colluding
validators never can, and at r = 10 % of a large network a frame needs a 0.86 % draw."""
DEFAULT_CHALLENGE_WINDOW = 4
"""Rounds after a job's sample round in which it may be accused."""
DEFAULT_AUDIT_WINDOW = 2
"""Rounds an assigned auditor has to answer (attest or accuse) before another is drawn."""
DEFAULT_VOTE_WINDOW = 2
"""Rounds a dispute's committee has to vote, counted from the round that drew it."""
DEFAULT_ACCUSER_BOND = 1_000
"""Escrowed from an accuser's balance for its accusation: returned when the committee finds
FRAUD or cannot decide, lost (with the false-accusation slash) when it finds the work VALID.
It pays for the committee's re-executions, k × C = 250 with the defaults, four times over."""
DEFAULT_LIVENESS_PENALTY = 500
"""Taken from a validator that stays silent past an audit deadline or through a vote window,
and it is jailed: silence must cost more than the C = 50 the work would have. Not an offence
(an honest validator may be offline), so it never tombstones."""
DEFAULT_REWARD = 100
"""R: the most a node earns from one job (its fee minus the verification fee)."""
DEFAULT_COMPUTE_COST = 50
"""C: what an honest node spends on one job, as the network estimates it."""
DEFAULT_COLLUSION_PPM = 100_000
"""r: the share of validators assumed to collude with a cheating node."""
DEFAULT_FRAUD_SLASH = 5_000
"""S: taken from a node's stake when a committee confirms FRAUD."""
DEFAULT_EQUIVOCATION_SLASH = 5_000
"""Taken from a node's stake for two different commitments to one job."""
DEFAULT_FALSE_ACCUSATION_SLASH = 2_000
"""Taken from a validator's stake when a committee finds its accusation VALID work."""
DEFAULT_VERIFICATION_FEE = 10
"""Part of each job's fee paid to the validator whose VALID attestation checked it."""
DEFAULT_LAZY_VALIDATOR_SLASH = 5_000
"""Taken from a validator's stake for attesting VALID to a job that turns out wrong: a canary
(Truebit's forced errors) or a job whose FRAUD a committee confirmed. A lazy attestation saves
C = 50, so canaries on 1 % of jobs already make it a loss."""
DEFAULT_AVAILABILITY_WINDOW = 2
"""Rounds a node has to serve a sampled job's output after a validator reports it missing.
A node that does not is slashed the fraud slash S: withholding must cost as much as being
caught, or a cheat that is sampled would simply withhold."""
DEFAULT_UNBONDING_PERIOD = 32
"""Rounds between ``Unbond`` and the earliest ``Withdraw`` (Cosmos: 21 days), and that a node's
earnings stay locked. It must cover :func:`slashing.rules.liability_horizon`, the longest an
offence can take to be proven."""
DEFAULT_JAIL_PERIOD = 8
"""Rounds a slashed role may not act (Cosmos jails; here release is automatic)."""
DEFAULT_TOMBSTONE_OFFENCES = 3
"""Offences after which a role is tombstoned: slashed out for good (Cosmos tombstones on the
first double-sign; equivocation here tombstones at once too)."""

# -- How a slash is shared out (the rest of each slash is burned) ------------------------------
DEFAULT_ACCUSER_SHARE_BPS = 4_000
"""Of a FRAUD slash, to the assigned auditors that accused the job (to every accuser when none
did): pays for the re-execution. Not to other accusers, or a coalition accusing its own node
first would win part of S back."""
DEFAULT_COMMITTEE_SHARE_BPS = 2_000
"""Of any dispute slash, split equally among committee members who voted the outcome."""
DEFAULT_WRONGED_NODE_SHARE_BPS = 4_000
"""Of a false-accusation slash, to the node that was wrongly accused."""
DEFAULT_REPORTER_SHARE_BPS = 1_000
"""Of an equivocation or unavailability slash, to the reporter; small because a node could
report itself through a second identity and win this share back."""

# -- Event log ---------------------------------------------------------------------------------
EVENT_SCHEMA_VERSION = 2
MAX_EVENT_BYTES = 2 * MAX_MESSAGE_BYTES + 4096
"""An event embeds at most two protocol messages, each bounded by the codec."""
GENESIS_PREV_HASH = bytes(32)
"""The ``prev_hash`` of the first row of the hash-chained event log."""

# -- Store --------------------------------------------------------------------------------------
STATE_HASH_TAG = b"assay/v1/ledger-state\x00"
"""Domain tag of the state hash, ``sha256(tag ‖ canonical state bytes)``."""
SNAPSHOT_INTERVAL = 5_000
"""Events between snapshots of the state; opening replays at most this many through the rules."""
SNAPSHOTS_KEPT = 3
"""Newest snapshots kept on disk; older ones are deleted when a new one is written."""
