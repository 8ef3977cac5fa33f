// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IBeacon} from "./IBeacon.sol";
import {IZkVerifier} from "./IZkVerifier.sol";
import {JobTree} from "./JobTree.sol";

/// @title Assay's ledger on an EVM chain: the rules of `slashing/rules.py` as a contract
/// @notice The Python rules are the specification; each function here names the
/// `process_*` rule it follows and makes its checks in the same order, with a custom error
/// named for each refusal. An account is its chain address: the transaction's sender
/// authenticates it, so no signature is checked on chain. The operator registers each
/// account's 32-byte protocol key it signs messages with (`register`); the draws rank validators by
/// it, exactly as `protocol.sampling` ranks them, so both ledgers draw the same auditors
/// and committees.
///
/// The clock is the beacon: `advance` processes the next round the beacon contract
/// verified (committees, availability deadlines, sample draws and auditor assignment,
/// audit deadlines, releases of earnings, settlements), as `process_beacon_round` does.
///
/// A node commits to jobs as one Merkle root per batch per round (`postBatch`): the root
/// binds every (job id, commitment id, output hash) leaf and its index, and the sender
/// authenticates the batch. A client records a job it pays for by proving its leaf
/// (`recordJob`, the chain's `RecordJob`); two different leaves for one job id under one
/// node's roots are equivocation, slashed on that evidence alone (`reportEquivocation`).
contract AssayLedger {
    // -- Constants (slashing/constants.py, protocol/sampling.py) -------------------------------
    uint256 internal constant BPS = 10_000;
    uint256 internal constant PPM = 1_000_000;
    uint64 internal constant MAX_SUPPLY = type(uint64).max;
    uint64 internal constant MIN_STAKE = 10_000; // MIN_STAKE[node] == MIN_STAKE[validator]
    uint256 internal constant MAX_UNBONDING_ENTRIES = 7;
    uint256 internal constant MAX_AUDIT_DRAWS = 3;
    uint256 internal constant MAX_COMMITTEE_DRAWS = 3;
    uint64 internal constant NONE = type(uint64).max; // an optional round that is not set
    /// The gas a zk verifier contract is given (EZKL's Halo2 verifier of a small model uses
    /// about 0.65 M).
    uint256 internal constant ZK_VERIFY_GAS = 5_000_000;
    uint8 internal constant NODE = 0;
    uint8 internal constant VALIDATOR = 1;
    uint8 internal constant VALID = 1;
    uint8 internal constant FRAUD = 2;
    uint8 internal constant INCONCLUSIVE = 3;
    uint8 internal constant PENDING = 1;
    uint8 internal constant SETTLED = 2;
    uint8 internal constant REFUNDED = 3;
    bytes internal constant SAMPLE_TAG = "assay/v1/sample\x00";
    bytes internal constant COMMITTEE_TAG = "assay/v1/committee\x00";
    bytes internal constant AUDIT_KEY_TAG = "assay/v1/audit-draw\x00";
    bytes internal constant DISPUTE_KEY_TAG = "assay/v1/dispute-draw\x00";
    bytes internal constant CANARY_TAG = "assay/v1/canary\x00";

    /// The network's parameters: `slashing.state.LedgerParams`, field for field, in order.
    struct Params {
        uint64 samplePpm;
        uint64 committeeSize;
        uint64 challengeWindow;
        uint64 reward;
        uint64 computeCost;
        uint64 collusionPpm;
        uint64 fraudSlash;
        uint64 equivocationSlash;
        uint64 falseAccusationSlash;
        uint64 verificationFee;
        uint64 accuserShareBps;
        uint64 committeeShareBps;
        uint64 wrongedNodeShareBps;
        uint64 reporterShareBps;
        uint64 lazyValidatorSlash;
        uint64 availabilityWindow;
        uint64 unbondingPeriod;
        uint64 jailPeriod;
        uint64 tombstoneOffences;
        uint64 auditWindow;
        uint64 voteWindow;
        uint64 accuserBond;
        uint64 livenessPenalty;
    }

    /// Tokens bonded in one role and its standing (one slot).
    struct Stake {
        uint64 amount;
        uint64 jailedUntil; // first round it may act again; 0: never jailed
        uint32 offences;
        bool slashedOut; // the tombstone
    }

    /// Stake on its way out, slashable for offences up to `startedRound` (one slot).
    struct Unbonding {
        uint8 role;
        uint64 amount;
        uint64 startedRound;
        uint64 releaseRound;
    }

    /// A node's earnings, held slashable until `releaseRound`.
    struct Locked {
        uint64 releaseRound;
        uint64 amount;
    }

    struct Account {
        uint64 balance;
        bool known;
        bytes32 key;
        Stake[2] stakes; // [node, validator]
        Unbonding[] unbonding;
        Locked[] locked;
    }

    struct Attestation {
        address validator;
        uint8 verdict;
    }

    /// `slashing.state.Job`; optional rounds hold NONE when unset.
    struct Job {
        address client;
        uint64 fee;
        address node;
        uint64 recordedRound;
        uint8 status;
        bool sampled;
        bool zk;
        bool equivocated;
        bool auditPending;
        address verifier;
        uint64 closedRound;
        address availabilityReporter;
        uint64 unavailableSince;
        uint64 servedRound;
        uint64 assignedRound;
        uint64 auditDeadline;
        bytes32 commitmentId;
        bytes32 outputHash;
        bytes32 modelId;
        bytes32 proofHash;
        bytes32 dispute;
        address[] auditors;
        address[] accusers;
        Attestation[] attestations;
    }

    struct Vote {
        address validator;
        uint8 verdict;
    }

    /// `slashing.state.Dispute`: every MISMATCH accusation against one job.
    struct Dispute {
        bytes32 jobId;
        address node;
        uint64 openedRound;
        uint64 bond;
        uint64 draws;
        uint64 drawnRound;
        uint64 closedRound;
        uint8 outcome; // 0 while open
        address[] accusers;
        address[] committee;
        Vote[] votes;
    }

    /// Ids in no order, added and removed in constant gas (`open_disputes` and the like).
    struct OpenSet {
        bytes32[] items;
        mapping(bytes32 id => uint256) position; // index + 1; 0: absent
    }

    /// One leaf of a posted batch, with the batch it is in and its Merkle path.
    struct Leaf {
        address node;
        uint64 round;
        bytes32 root;
        uint32 count;
        uint32 index;
        bytes32 jobId;
        bytes32 commitmentId;
        bytes32 outputHash;
        bytes32 proofHash;
        bytes32[] path;
    }

    // -- Errors, one per rule ----------------------------------------------------------------
    error NotOperator(address sender);
    error UnsafeParams(string rule);
    error UnknownRole(uint8 role);
    error ZeroAmount();
    error AmountOutOfRange(uint256 amount, uint256 bound);
    error UnknownAccount(address account);
    error KeyAlreadyRegistered(address account, bytes32 key);
    error NoKeyRegistered(address account);
    error SlashedOut(address account, uint8 role);
    error InsufficientFunds(address account, uint256 available, uint256 needed);
    error BelowMinimumStake(address account, uint8 role, uint256 left);
    error TooManyUnbondings(address account);
    error NothingToWithdraw(address account, uint64 round);
    error OpenCase(address account, uint64 since);
    error BeaconNotStarted();
    error RoundNotVerified(uint64 round);
    error NotBonded(address account, uint8 role);
    error RoundNotCurrent(uint64 current, uint64 given);
    error BadBatchSize(uint32 count);
    error BatchAlreadyPosted(address node, uint64 round);
    error UnknownBatch(address node, uint64 round);
    error LeafOutOfRange(uint32 index, uint32 count);
    error InvalidMerkleProof(address node, uint64 round, uint32 index);
    error SampleRoundNotRevealed(uint64 round);
    error SelfAccusation(address account);
    error NotEquivocation(bytes32 jobIdA, bytes32 jobIdB);
    error AlreadySlashedForEquivocation(address node, bytes32 jobId);
    error CommitmentAlreadyRecorded(bytes32 commitmentId);
    error JobOfAnotherNode(bytes32 jobId, address node);
    error InFlightLimit(address node, uint256 inFlight, uint256 limit);
    error UnknownJob(bytes32 jobId);
    error JobNotPending(bytes32 jobId, uint8 status);
    error NotSampled(bytes32 jobId);
    error NotAssigned(bytes32 jobId, address validator);
    error NotOnCommittee(bytes32 jobId, address validator);
    error FraudIsEvidence();
    error WrongBeaconRound(uint64 expected, uint64 given);
    error AlreadyVoted(bytes32 disputeId, address validator);
    error EvidenceAlreadyRecorded(bytes32 evidenceId);
    error DisputeDecided(bytes32 jobId, uint8 outcome);
    error ChallengeWindowClosed(bytes32 jobId, uint64 windowEnd);
    error OpenChallenge(bytes32 jobId);
    error AlreadyAccused(bytes32 jobId, address accuser);
    error SitsOnCommittee(bytes32 jobId, address accuser);
    error SameOutput(bytes32 jobId);
    error TooFewCandidates(uint256 candidates, uint256 needed);
    error AlreadyReported(bytes32 jobId, uint64 since);
    error OpenDispute(bytes32 jobId);
    error NoOpenChallenge(bytes32 jobId);
    error ServedTooLate(bytes32 jobId, uint64 deadline);
    error WrongOutput(bytes32 jobId);
    error CanaryAlreadyPlanted(bytes32 digest);
    error UnknownCanary(bytes32 jobId);
    error CanaryAlreadyRevealed(bytes32 jobId);
    error CanaryPlantedLate(bytes32 jobId, uint64 planted, uint64 recorded);
    error JobStillPending(bytes32 jobId);
    error CanaryRevealedLate(bytes32 jobId, uint64 deadline);
    error ZkModelAlreadyRegistered(bytes32 modelId);
    error NotAZkModel(bytes32 modelId);
    error ProofAlreadySlashed(bytes32 jobId);
    error WrongProof(bytes32 jobId);
    error TooLittleGas(uint256 verifierGas);

    // -- Events --------------------------------------------------------------------------------
    event Slashed(address indexed account, uint8 role, uint64 taken, uint32 offences, bool tombstoned);
    event BatchPosted(address indexed node, uint64 indexed round, bytes32 root, uint32 count);
    event JobRecorded(bytes32 indexed jobId, address indexed node, address client, uint64 round);
    event AuditorAssigned(bytes32 indexed jobId, address indexed auditor, uint64 round);
    event CommitteeDrawn(bytes32 indexed disputeId, bytes32 indexed jobId, address[] committee, uint64 round);
    event DisputeResolved(bytes32 indexed disputeId, bytes32 indexed jobId, uint8 outcome);
    event Equivocated(address indexed node, bytes32 indexed jobId, address reporter);
    event JobClosed(bytes32 indexed jobId, uint8 status);

    // -- Storage ---------------------------------------------------------------------------------
    address public immutable operator;
    IBeacon public immutable beacon;
    uint64 public immutable firstRound;
    Params internal _params;
    uint64 public minted;
    uint64 public burned;
    /// Beacon rounds this ledger has processed (`advance`).
    uint64 public roundCount;
    mapping(address account => Account) internal _accounts;
    mapping(bytes32 key => address) public accountOfKey;
    /// Every account that ever bonded as a validator, in the order they first did.
    address[] public validators;
    mapping(address => bool) internal _isValidator;
    /// keccak256(root ‖ count) of each node's batch per round: one slot per batch.
    mapping(address node => mapping(uint64 round => bytes32)) public batchDigest;
    mapping(address node => mapping(bytes32 jobId => bool)) public equivocated;
    mapping(bytes32 jobId => Job) internal _jobs;
    mapping(bytes32 disputeId => Dispute) internal _disputes;
    mapping(bytes32 commitmentId => bool) public seenCommitment;
    mapping(bytes32 evidenceId => bool) public seenEvidence;
    mapping(address node => uint256) public inFlight;
    mapping(bytes32 digest => uint64) public canaryPlanted; // round + 1; 0: not planted
    mapping(bytes32 jobId => bool) public canaryRevealed;
    mapping(bytes32 modelId => IZkVerifier) public zkVerifier;
    mapping(bytes32 jobId => bool) public proofFraud;
    OpenSet internal _openDisputes;
    OpenSet internal _openChallenges;
    OpenSet internal _openAudits;
    mapping(uint64 round => bytes32[]) internal _sampleQueue;
    mapping(uint64 round => bytes32[]) internal _auditQueue;
    mapping(uint64 round => bytes32[]) internal _settleQueue;
    mapping(uint64 round => address[]) internal _unlockQueue;

    constructor(IBeacon beacon_, Params memory params_) {
        _checkParams(params_);
        operator = msg.sender;
        beacon = beacon_;
        firstRound = beacon_.firstRound();
        _params = params_;
    }

    // -- Views -------------------------------------------------------------------------------------

    function params() external view returns (Params memory) {
        return _params;
    }

    function account(address who)
        external
        view
        returns (uint64 balance, bool known, bytes32 key, Stake memory node, Stake memory validator,
                 Unbonding[] memory unbonding, Locked[] memory locked)
    {
        Account storage a = _accounts[who];
        return (a.balance, a.known, a.key, a.stakes[NODE], a.stakes[VALIDATOR], a.unbonding,
                a.locked);
    }

    function job(bytes32 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    function dispute(bytes32 disputeId) external view returns (Dispute memory) {
        return _disputes[disputeId];
    }

    function openDisputes() external view returns (bytes32[] memory) {
        return _openDisputes.items;
    }

    function validatorCount() external view returns (uint256) {
        return validators.length;
    }

    /// The round this ledger last processed; reverts before the first.
    function currentRound() public view returns (uint64) {
        if (roundCount == 0) revert BeaconNotStarted();
        return firstRound + roundCount - 1;
    }

    /// The value of a round this ledger processed; zero when it has not.
    function beaconValue(uint64 round) public view returns (bytes32) {
        if (round < firstRound || round >= firstRound + roundCount) return bytes32(0);
        return beacon.randomness(round);
    }

    /// `is_bonded`: at least the minimum stake in `role`, not slashed out, not jailed.
    function isBonded(address who, uint8 role) public view returns (bool) {
        Stake storage s = _accounts[who].stakes[role];
        if (s.slashedOut || s.amount < MIN_STAKE) return false;
        return s.jailedUntil == 0 || currentRound() >= s.jailedUntil;
    }

    /// `protocol.sampling.sampled` for a leaf: the value of the round after its batch's round
    /// decides, exactly as it decides for a job the Python ledger records in that round.
    function isSampled(Leaf calldata leaf) public view returns (bool) {
        _verifyLeaf(leaf);
        bytes32 value = beaconValue(leaf.round + 1);
        if (value == bytes32(0)) revert SampleRoundNotRevealed(leaf.round + 1);
        return _sampled(value, leaf.jobId, leaf.commitmentId);
    }

    /// Whether `leaf` is in its node's batch of its round: reverts naming what is wrong.
    function verifyLeaf(Leaf calldata leaf) external view returns (bool) {
        _verifyLeaf(leaf);
        return true;
    }

    /// `liability_horizon`: the most rounds between an offence and the slash that proves it.
    function liabilityHorizon(Params memory p) public pure returns (uint256) {
        uint256 audits = MAX_AUDIT_DRAWS * (uint256(p.auditWindow) + 1);
        uint256 window = uint256(p.challengeWindow) + 1 > audits ? uint256(p.challengeWindow) + 1 : audits;
        uint256 disputeRounds = 1 + MAX_COMMITTEE_DRAWS * (uint256(p.voteWindow) + 1);
        return window + p.availabilityWindow + p.challengeWindow + disputeRounds + p.challengeWindow;
    }

    // -- Tokens and stake ------------------------------------------------------------------------

    /// `process_mint`: the operator creates tokens (genesis, client deposits).
    function mint(address to, uint64 amount) external {
        _onlyOperator();
        if (amount == 0) revert ZeroAmount();
        // Verify the supply stays within 64 bits
        if (uint256(minted) + amount > MAX_SUPPLY) revert AmountOutOfRange(amount, MAX_SUPPLY - minted);
        _credit(to, amount);
        minted += amount;
    }

    /// The protocol key (Ed25519 public key) `account` signs its messages with, once, set by
    /// the operator: the draws rank validators by it, as the Python ledger ranks them by their
    /// account key. The chain cannot check an Ed25519 signature cheaply, so a key an account
    /// named for itself would prove nothing: anyone could claim another party's key and be
    /// drawn in its place. The operator, who already mints, binds each address to the key it
    /// saw the account sign with.
    function register(address account, bytes32 key) external {
        _onlyOperator();
        Account storage a = _accounts[account];
        if (a.key != bytes32(0) || key == bytes32(0) || accountOfKey[key] != address(0)) {
            revert KeyAlreadyRegistered(account, key);
        }
        a.key = key;
        accountOfKey[key] = account;
    }

    /// `process_bond`: move `amount` of the sender's balance into its stake for `role`.
    function bond(uint8 role, uint64 amount) external {
        _checkRole(role);
        if (amount == 0) revert ZeroAmount();
        Account storage a = _known(msg.sender);
        Stake storage s = a.stakes[role];
        // Verify a slashed-out role is not topped up
        if (s.slashedOut) revert SlashedOut(msg.sender, role);
        // Verify the balance covers the bond
        if (a.balance < amount) revert InsufficientFunds(msg.sender, a.balance, amount);
        // Verify the stake reaches the role's minimum
        uint256 total = uint256(s.amount) + amount;
        if (total < MIN_STAKE) revert BelowMinimumStake(msg.sender, role, total);
        // Verify a validator can be drawn: its key ranks it
        if (role == VALIDATOR && a.key == bytes32(0)) revert NoKeyRegistered(msg.sender);
        s.amount = uint64(total);
        a.balance -= amount;
        if (role == VALIDATOR && !_isValidator[msg.sender]) {
            _isValidator[msg.sender] = true;
            validators.push(msg.sender);
        }
    }

    /// `process_unbond`: start moving stake out; slashable for what was done while bonded.
    function unbond(uint8 role, uint64 amount) external {
        _checkRole(role);
        if (amount == 0) revert ZeroAmount();
        Account storage a = _known(msg.sender);
        Stake storage s = a.stakes[role];
        // Verify the stake covers the amount
        if (amount > s.amount) revert InsufficientFunds(msg.sender, s.amount, amount);
        // Verify an active role keeps at least the minimum, or leaves entirely
        uint64 left = s.amount - amount;
        if (left != 0 && left < MIN_STAKE && !s.slashedOut) {
            revert BelowMinimumStake(msg.sender, role, left);
        }
        // Verify the account has room for another entry
        if (a.unbonding.length >= MAX_UNBONDING_ENTRIES) revert TooManyUnbondings(msg.sender);
        uint64 round = currentRound();
        s.amount = left;
        a.unbonding.push(Unbonding(role, amount, round, round + _params.unbondingPeriod));
    }

    /// `process_withdraw`: pay out every unbonding entry whose period is over.
    function withdraw() external {
        Account storage a = _known(msg.sender);
        uint64 round = currentRound();
        uint64 released;
        uint64 since;
        bool any;
        for (uint256 i = 0; i < a.unbonding.length; i++) {
            Unbonding memory entry = a.unbonding[i];
            if (entry.releaseRound <= round) {
                released += entry.amount;
                if (!any || entry.startedRound > since) since = entry.startedRound;
                any = true;
            }
        }
        // Verify some unbonding stake is released
        if (!any) revert NothingToWithdraw(msg.sender, round);
        // Verify no open case about what the account did while that stake was bonded could slash it
        if (_hasOpenCase(msg.sender, since)) revert OpenCase(msg.sender, since);
        uint256 kept;
        for (uint256 i = 0; i < a.unbonding.length; i++) {
            Unbonding memory entry = a.unbonding[i];
            if (entry.releaseRound > round) a.unbonding[kept++] = entry;
        }
        while (a.unbonding.length > kept) a.unbonding.pop();
        a.balance += released;
    }

    // -- Batched commitments and jobs ----------------------------------------------------------

    /// One Merkle root over `count` leaves, from a bonded node, once per round: the round is
    /// the current one, so the value that samples the batch (the next round's) is unknown
    /// when its root is fixed.
    function postBatch(uint64 round, bytes32 root, uint32 count) external {
        // Verify the node is bonded, not jailed and not slashed out
        if (!isBonded(msg.sender, NODE)) revert NotBonded(msg.sender, NODE);
        // Verify the batch is for the current round
        uint64 current = currentRound();
        if (round != current) revert RoundNotCurrent(current, round);
        // Verify its size
        if (count == 0 || count > JobTree.MAX_LEAVES || root == bytes32(0)) revert BadBatchSize(count);
        // Verify the node posts one batch per round
        if (batchDigest[msg.sender][round] != bytes32(0)) revert BatchAlreadyPosted(msg.sender, round);
        batchDigest[msg.sender][round] = keccak256(abi.encodePacked(root, count));
        emit BatchPosted(msg.sender, round, root, count);
    }

    /// `process_record_job`: the client (the sender) pays `fee` for the job whose leaf the
    /// node posted this round; the leaf's proof stands for the node's signed commitment and
    /// the client's transaction for its signed request. A second, different leaf for a job
    /// the ledger holds is equivocation, slashed at once with no reporter.
    function recordJob(Leaf calldata leaf, bytes32 modelId, uint64 fee) external {
        bytes32 jobId = leaf.jobId;
        address node = leaf.node;
        // Verify the node committed to the leaf, in this round's batch
        _verifyLeaf(leaf);
        uint64 current = currentRound();
        if (leaf.round != current) revert RoundNotCurrent(current, leaf.round);
        // Verify the commitment was not recorded before
        if (seenCommitment[leaf.commitmentId]) revert CommitmentAlreadyRecorded(leaf.commitmentId);
        // Verify the node has not been slashed for equivocating on this job
        if (equivocated[node][jobId]) revert AlreadySlashedForEquivocation(node, jobId);
        Job storage existing = _jobs[jobId];
        if (existing.status != 0) {
            // Verify the job is this node's: only its own second leaf is equivocation
            if (existing.node != node) revert JobOfAnotherNode(jobId, existing.node);
            seenCommitment[leaf.commitmentId] = true;
            _punishEquivocation(node, jobId, address(0));
            return;
        }
        // Verify the node is bonded, not jailed and not slashed out
        if (!isBonded(node, NODE)) revert NotBonded(node, NODE);
        // Verify the node's stake covers one more job in flight
        Params storage p = _params;
        uint256 limit = uint256(_accounts[node].stakes[NODE].amount) * PPM / (uint256(p.samplePpm) * p.fraudSlash);
        if (inFlight[node] >= limit) revert InFlightLimit(node, inFlight[node], limit);
        // Verify the fee pays the verification fee and a reward of at most R
        if (fee < p.verificationFee) revert AmountOutOfRange(fee, p.verificationFee);
        if (fee - p.verificationFee > p.reward) revert AmountOutOfRange(fee, uint256(p.reward) + p.verificationFee);
        // Verify the client can pay
        Account storage client = _known(msg.sender);
        if (client.balance < fee) revert InsufficientFunds(msg.sender, client.balance, fee);
        client.balance -= fee;
        Job storage j = _jobs[jobId];
        j.client = msg.sender;
        j.fee = fee;
        j.node = node;
        j.recordedRound = current;
        j.status = PENDING;
        j.zk = address(zkVerifier[modelId]) != address(0);
        j.closedRound = NONE;
        j.unavailableSince = NONE;
        j.servedRound = NONE;
        j.assignedRound = NONE;
        j.auditDeadline = NONE;
        j.commitmentId = leaf.commitmentId;
        j.outputHash = leaf.outputHash;
        j.modelId = modelId;
        j.proofHash = leaf.proofHash;
        seenCommitment[leaf.commitmentId] = true;
        inFlight[node] += 1;
        _sampleQueue[current + 1].push(jobId);
        _settleQueue[current + p.challengeWindow + 2].push(jobId);
        emit JobRecorded(jobId, node, msg.sender, current);
    }

    // -- The clock -------------------------------------------------------------------------------

    /// `process_beacon_round`: the next round the beacon verified, and what is due in it.
    function advance() external {
        uint64 round = firstRound + roundCount;
        // Verify the beacon verified the round: a withheld round stalls the ledger
        if (beacon.randomness(round) == bytes32(0)) revert RoundNotVerified(round);
        roundCount += 1;
        Params storage p = _params;
        // Committees whose vote window has passed decide or are drawn again; waiting ones are drawn
        bytes32[] memory open = _sorted(_openDisputes.items);
        for (uint256 i = 0; i < open.length; i++) {
            Dispute storage d = _disputes[open[i]];
            if (d.drawnRound != NONE && round > d.drawnRound + p.voteWindow) {
                _concludeCommittee(open[i], true);
            }
            if (d.outcome == 0 && d.drawnRound == NONE) _drawCommittee(open[i]);
        }
        // Outputs reported unavailable and not served in time are slashed
        bytes32[] memory challenged = _sorted(_openChallenges.items);
        for (uint256 i = 0; i < challenged.length; i++) {
            Job storage j = _jobs[challenged[i]];
            if (round > j.unavailableSince + p.availabilityWindow) _resolveUnavailable(challenged[i]);
        }
        // Jobs whose sample round this is: drawn for audit, and their auditor assigned
        bytes32[] storage samples = _sampleQueue[round];
        for (uint256 i = 0; i < samples.length; i++) {
            Job storage j = _jobs[samples[i]];
            if (j.status == PENDING && !j.equivocated) _drawSample(samples[i]);
        }
        // Auditors past their deadline pay for their silence; another is drawn
        bytes32[] storage audits = _auditQueue[round];
        for (uint256 i = 0; i < audits.length; i++) _checkAudit(audits[i]);
        // Locked earnings whose period is over are released
        address[] storage unlocks = _unlockQueue[round];
        for (uint256 i = 0; i < unlocks.length; i++) _unlockEarnings(unlocks[i]);
        // Jobs due this round whose challenge window has passed undisputed settle
        bytes32[] storage due = _settleQueue[round];
        for (uint256 i = 0; i < due.length; i++) {
            if (_isSettleable(due[i])) _settle(due[i]);
        }
    }

    // -- Audits and votes --------------------------------------------------------------------

    /// `process_attest`: the assigned auditor's answer (VALID or INCONCLUSIVE; FRAUD comes
    /// as evidence), or a committee member's vote in the job's open dispute.
    function attest(bytes32 jobId, uint8 verdict, uint64 beaconRound) external {
        Job storage j = _job(jobId);
        if (verdict < VALID || verdict > INCONCLUSIVE) revert FraudIsEvidence();
        // A member of the job's open dispute's committee votes
        bytes32 disputeId = j.dispute;
        Dispute storage d = _disputes[disputeId];
        bool open = disputeId != bytes32(0) && d.outcome == 0;
        if (open && _contains(d.committee, msg.sender)) {
            _vote(disputeId, verdict, beaconRound);
            return;
        }
        address auditor = _auditor(j);
        // Verify a vote comes from the committee
        if (open && beaconRound == d.drawnRound && msg.sender != auditor) {
            revert NotOnCommittee(jobId, msg.sender);
        }
        // Verify FRAUD comes as evidence, which opens or joins the job's dispute
        if (verdict == FRAUD) revert FraudIsEvidence();
        // Verify the job is not settled
        if (j.status != PENDING) revert JobNotPending(jobId, j.status);
        // Verify the job's sample round is revealed and the job was selected for an audit
        if (currentRound() < j.recordedRound + 1) revert SampleRoundNotRevealed(j.recordedRound + 1);
        if (j.auditors.length == 0) revert NotSampled(jobId);
        // Verify the validator is the auditor the ledger assigned, and its answer is awaited
        if (msg.sender != auditor) revert NotAssigned(jobId, msg.sender);
        // Verify it names the round that drew it
        if (beaconRound != j.assignedRound) revert WrongBeaconRound(j.assignedRound, beaconRound);
        j.attestations.push(Attestation(msg.sender, verdict));
        if (verdict == VALID) j.verifier = msg.sender;
        _answerAudit(jobId, verdict == VALID);
    }

    /// `process_vote`: a member's verdict; the last vote decides the committee.
    function _vote(bytes32 disputeId, uint8 verdict, uint64 beaconRound) internal {
        Dispute storage d = _disputes[disputeId];
        // Verify the vote names the round that drew the committee
        if (beaconRound != d.drawnRound) revert WrongBeaconRound(d.drawnRound, beaconRound);
        // Verify each member votes once
        for (uint256 i = 0; i < d.votes.length; i++) {
            if (d.votes[i].validator == msg.sender) revert AlreadyVoted(disputeId, msg.sender);
        }
        d.votes.push(Vote(msg.sender, verdict));
        if (d.votes.length == d.committee.length) _concludeCommittee(disputeId, false);
    }

    // -- Accusations ---------------------------------------------------------------------------

    /// `process_mismatch`: re-execution disagrees; opens the job's one dispute or joins it,
    /// escrowing the accuser bond. `evidenceId` is the content id of the signed evidence
    /// off chain; the first one names the dispute.
    function accuse(bytes32 jobId, bytes32 observedHash, uint64 beaconRound, bytes32 evidenceId)
        external
    {
        Job storage j = _job(jobId);
        _admitEvidence(j.node, evidenceId);
        Params storage p = _params;
        // Verify the job is not settled
        if (j.status != PENDING) revert JobNotPending(jobId, j.status);
        // Verify the job was sampled
        if (!j.sampled) revert NotSampled(jobId);
        // Verify the evidence names the round that sampled the job
        if (beaconRound != j.recordedRound + 1) revert WrongBeaconRound(j.recordedRound + 1, beaconRound);
        bytes32 disputeId = j.dispute;
        Dispute storage d = _disputes[disputeId];
        // Verify the job's one dispute, if it had one, is still open
        if (disputeId != bytes32(0) && d.outcome != 0) revert DisputeDecided(jobId, d.outcome);
        // Verify the challenge window is open (an open dispute takes accusers whatever the window)
        if (disputeId == bytes32(0) && currentRound() > _windowEnd(j)) {
            revert ChallengeWindowClosed(jobId, _windowEnd(j));
        }
        // Verify no availability challenge is open on the job: its output is not yet served
        if (_hasOpenChallenge(j)) revert OpenChallenge(jobId);
        // Verify each validator accuses a job once, and a committee member votes instead
        if (_contains(j.accusers, msg.sender)) revert AlreadyAccused(jobId, msg.sender);
        if (disputeId != bytes32(0) && _contains(d.committee, msg.sender)) {
            revert SitsOnCommittee(jobId, msg.sender);
        }
        // Verify the claimed output differs from the committed one
        if (observedHash == j.outputHash) revert SameOutput(jobId);
        // Verify the accuser can post the bond
        Account storage a = _accounts[msg.sender];
        if (a.balance < p.accuserBond) revert InsufficientFunds(msg.sender, a.balance, p.accuserBond);
        if (disputeId == bytes32(0)) {
            disputeId = evidenceId;
            d = _disputes[disputeId];
            d.jobId = jobId;
            d.node = j.node;
            d.openedRound = currentRound();
            d.bond = p.accuserBond;
            d.drawnRound = NONE;
            d.closedRound = NONE;
            // Verify enough validators besides the node, the accuser and the auditors could sit
            uint256 candidates = _committeeCandidates(j, msg.sender).length;
            if (candidates < p.committeeSize) revert TooFewCandidates(candidates, p.committeeSize);
            _add(_openDisputes, disputeId);
            j.dispute = disputeId;
        }
        a.balance -= p.accuserBond;
        d.accusers.push(msg.sender);
        j.accusers.push(msg.sender);
        seenEvidence[evidenceId] = true;
        if (msg.sender == _auditor(j)) _answerAudit(jobId, true);
    }

    /// `process_equivocation`: two different leaves for one job id under one node's batches,
    /// reported by a bonded validator. Self-contained: the node posted both roots from its
    /// account. When the job is on the ledger as the node's, the offence is as old as its
    /// record; otherwise when it was committed is unknown and every unbonding entry is
    /// reachable. The node is tombstoned at once and the reporter earns its share.
    function reportEquivocation(Leaf calldata a, Leaf calldata b) external {
        address node = a.node;
        // Verify the reporter is a bonded validator, not the node
        _admitEvidence(node, bytes32(0));
        // Verify both leaves are the node's, for one job, and differ
        if (b.node != node || a.jobId != b.jobId || a.commitmentId == b.commitmentId) {
            revert NotEquivocation(a.jobId, b.jobId);
        }
        _verifyLeaf(a);
        _verifyLeaf(b);
        // Verify the node has an account to slash
        if (!_accounts[node].known) revert UnknownAccount(node);
        // Verify this equivocation was not slashed already
        if (equivocated[node][a.jobId]) revert AlreadySlashedForEquivocation(node, a.jobId);
        _punishEquivocation(node, a.jobId, msg.sender);
    }

    /// `process_report_unavailable`: a sampled job's output could not be fetched; the node
    /// must serve it on chain within the availability window.
    function reportUnavailable(bytes32 jobId) external {
        // Verify the reporter is a bonded validator
        if (!isBonded(msg.sender, VALIDATOR)) revert NotBonded(msg.sender, VALIDATOR);
        Job storage j = _job(jobId);
        // Verify nobody reports their own job
        if (msg.sender == j.node) revert SelfAccusation(msg.sender);
        // Verify the job is not settled
        if (j.status != PENDING) revert JobNotPending(jobId, j.status);
        // Verify the job was sampled: only sampled jobs need their output served
        if (!j.sampled) revert NotSampled(jobId);
        // Verify the challenge window is open
        if (currentRound() > _windowEnd(j)) revert ChallengeWindowClosed(jobId, _windowEnd(j));
        // Verify the output was never reported or served
        if (j.unavailableSince != NONE) revert AlreadyReported(jobId, j.unavailableSince);
        // Verify no dispute is open on the job
        if (_isOpenDispute(j)) revert OpenDispute(jobId);
        j.unavailableSince = currentRound();
        j.availabilityReporter = msg.sender;
        _add(_openChallenges, jobId);
    }

    /// `process_serve_data`: the reported output on chain; the challenge window restarts.
    function serveData(bytes32 jobId, bytes calldata output) external {
        Job storage j = _job(jobId);
        // Verify an availability challenge is open on the job
        if (!_hasOpenChallenge(j)) revert NoOpenChallenge(jobId);
        // Verify the answer comes in time
        uint64 deadline = j.unavailableSince + _params.availabilityWindow;
        uint64 current = currentRound();
        if (current > deadline) revert ServedTooLate(jobId, deadline);
        // Verify the output is the committed one
        if (sha256(output) != j.outputHash) revert WrongOutput(jobId);
        j.servedRound = current;
        if (j.auditPending) {
            if (j.auditDeadline == NONE) {
                _auditQueue[current + 1].push(jobId);
            } else {
                j.auditDeadline = current + _params.auditWindow;
                _auditQueue[current + _params.auditWindow + 1].push(jobId);
            }
        }
        _remove(_openChallenges, jobId);
        _settleQueue[_windowEnd(j) + 1].push(jobId);
    }

    // -- Canaries and zk models (the operator's) -------------------------------------------------

    /// `process_plant_canary`: a hiding commitment to a canary job, before it is recorded.
    function plantCanary(bytes32 digest) external {
        _onlyOperator();
        // Verify the commitment is new
        if (canaryPlanted[digest] != 0) revert CanaryAlreadyPlanted(digest);
        canaryPlanted[digest] = currentRound() + 1;
    }

    /// `process_reveal_canary`: the job was a canary; every VALID on it was lazy, and burns.
    function revealCanary(bytes calldata salt, bytes32 jobId) external {
        _onlyOperator();
        Job storage j = _job(jobId);
        bytes32 digest = sha256(abi.encodePacked(CANARY_TAG, salt, jobId));
        // Verify the canary was planted
        uint64 planted = canaryPlanted[digest];
        if (planted == 0) revert UnknownCanary(jobId);
        // Verify the canary slashes once
        if (canaryRevealed[jobId]) revert CanaryAlreadyRevealed(jobId);
        // Verify it was planted before the job was recorded
        if (planted - 1 >= j.recordedRound) revert CanaryPlantedLate(jobId, planted - 1, j.recordedRound);
        // Verify the job is final: nobody can attest it any more
        if (j.status == PENDING || j.closedRound == NONE) revert JobStillPending(jobId);
        // Verify the reveal is in time for the stake it may take
        uint64 deadline = j.closedRound + _params.challengeWindow;
        if (currentRound() > deadline) revert CanaryRevealedLate(jobId, deadline);
        address[] memory lazy = _validVerdicts(j, j.dispute == bytes32(0) ? new Vote[](0) : _disputes[j.dispute].votes);
        for (uint256 i = 0; i < lazy.length; i++) {
            uint64 taken = _punish(lazy[i], VALIDATOR, _params.lazyValidatorSlash, j.recordedRound + 1, false);
            burned += taken;
        }
        delete canaryPlanted[digest];
        canaryRevealed[jobId] = true;
    }

    /// `process_register_zk_model`: the model's jobs carry EZKL proofs, judged by `verifier`
    /// (EZKL's generated Solidity verifier for the model's key and settings), once.
    function registerZkModel(bytes32 modelId, IZkVerifier verifier) external {
        _onlyOperator();
        if (address(zkVerifier[modelId]) != address(0)) revert ZkModelAlreadyRegistered(modelId);
        zkVerifier[modelId] = verifier;
    }

    /// `process_accuse_invalid_proof`: the proof the node committed to in its leaf fails the
    /// model's verifier contract: the node loses S and the client is refunded. A proof that
    /// holds makes the evidence a false accusation, paid by the accuser.
    function accuseInvalidProof(bytes32 jobId, bytes calldata proof, uint256[] calldata instances,
                                bytes32 evidenceId) external {
        Job storage j = _job(jobId);
        _admitEvidence(j.node, evidenceId);
        Params storage p = _params;
        // Verify the job's model is a zk model, registered before the job was recorded
        if (!j.zk) revert NotAZkModel(j.modelId);
        // Verify the proof is the one the node committed to
        if (keccak256(abi.encode(proof, instances)) != j.proofHash) revert WrongProof(jobId);
        // Verify the node was not slashed for this job's proof already
        if (proofFraud[jobId]) revert ProofAlreadySlashed(jobId);
        // Verify the job is not settled
        if (j.status != PENDING) revert JobNotPending(jobId, j.status);
        // Verify the challenge window is open, so the stake the slash takes is within reach
        if (currentRound() > _windowEnd(j)) revert ChallengeWindowClosed(jobId, _windowEnd(j));
        // Verify no dispute or availability challenge is open on the job
        if (_isOpenDispute(j) || _hasOpenChallenge(j)) revert OpenDispute(jobId);
        // Verify the verifier gets its whole allowance: a caller that starved it of gas could
        // otherwise turn a proof that holds into a revert, read as a proof that fails
        if (gasleft() < ZK_VERIFY_GAS + ZK_VERIFY_GAS / 63 + 50_000) revert TooLittleGas(ZK_VERIFY_GAS);
        // Re-check the proof: the verifier contract's verdict, a revert counting as a failure
        bool holds;
        try zkVerifier[j.modelId].verifyProof{gas: ZK_VERIFY_GAS}(proof, instances) returns (bool ok) {
            holds = ok;
        } catch {
            holds = false;
        }
        seenEvidence[evidenceId] = true;
        if (holds) {
            uint64 taken = _punish(msg.sender, VALIDATOR, p.falseAccusationSlash, currentRound(), false);
            _distribute(taken, _one(j.node), p.wrongedNodeShareBps, new address[](0), 0);
            if (msg.sender == _auditor(j)) _answerAudit(jobId, true);
        } else {
            uint64 taken = _punish(j.node, NODE, p.fraudSlash, j.recordedRound, false);
            _distribute(taken, _one(msg.sender), p.reporterShareBps, new address[](0), 0);
            _refund(jobId);
            proofFraud[jobId] = true;
        }
    }

    // -- Internals: accounts and money -------------------------------------------------------

    function _onlyOperator() internal view {
        if (msg.sender != operator) revert NotOperator(msg.sender);
    }

    function _checkRole(uint8 role) internal pure {
        if (role > VALIDATOR) revert UnknownRole(role);
    }

    function _known(address who) internal view returns (Account storage a) {
        a = _accounts[who];
        if (!a.known) revert UnknownAccount(who);
    }

    function _credit(address to, uint64 amount) internal {
        Account storage a = _accounts[to];
        a.known = true;
        a.balance += amount;
    }

    function _one(address who) internal pure returns (address[] memory group) {
        group = new address[](1);
        group[0] = who;
    }

    /// `admit_evidence`: new evidence, from a bonded validator that is not the accused node.
    function _admitEvidence(address node, bytes32 evidenceId) internal view {
        if (evidenceId != bytes32(0) && seenEvidence[evidenceId]) revert EvidenceAlreadyRecorded(evidenceId);
        if (!isBonded(msg.sender, VALIDATOR)) revert NotBonded(msg.sender, VALIDATOR);
        if (msg.sender == node) revert SelfAccusation(msg.sender);
    }

    /// `slash_stake`: bonded stake first, then unbonding entries of the role started at or
    /// after `offenceRound` (all of them when it is NONE), oldest first, then a node's locked
    /// earnings, oldest first. Below the minimum the role is slashed out, unless `slashOut`
    /// is off (the liveness penalty).
    function _slashStake(address who, uint8 role, uint64 amount, uint64 offenceRound, bool slashOut)
        internal
        returns (uint64 taken)
    {
        Account storage a = _accounts[who];
        Stake storage s = a.stakes[role];
        taken = s.amount < amount ? s.amount : amount;
        s.amount -= taken;
        uint256 kept;
        uint256 n = a.unbonding.length;
        for (uint256 i = 0; i < n; i++) {
            Unbonding memory entry = a.unbonding[i];
            bool reachable = offenceRound == NONE || entry.startedRound >= offenceRound;
            if (entry.role == role && reachable && taken < amount) {
                uint64 take = entry.amount < amount - taken ? entry.amount : amount - taken;
                taken += take;
                entry.amount -= take;
            }
            if (entry.amount != 0) a.unbonding[kept++] = entry;
        }
        while (a.unbonding.length > kept) a.unbonding.pop();
        if (role == NODE) {
            kept = 0;
            n = a.locked.length;
            for (uint256 i = 0; i < n; i++) {
                Locked memory held = a.locked[i];
                uint64 take = held.amount < amount - taken ? held.amount : amount - taken;
                taken += take;
                held.amount -= take;
                if (held.amount != 0) a.locked[kept++] = held;
            }
            while (a.locked.length > kept) a.locked.pop();
        }
        if (slashOut && s.amount < MIN_STAKE) s.slashedOut = true;
    }

    /// `jail`: for the rest of this round and `jailPeriod` more.
    function _jail(Stake storage s) internal {
        if (_params.jailPeriod == 0) return;
        uint64 release = currentRound() + _params.jailPeriod + 1;
        if (release > s.jailedUntil) s.jailedUntil = release;
    }

    /// `punish`: slash, count the offence, tombstone at the limit (or at once), and jail.
    function _punish(address who, uint8 role, uint64 amount, uint64 offenceRound, bool tombstone)
        internal
        returns (uint64 taken)
    {
        taken = _slashStake(who, role, amount, offenceRound, true);
        Stake storage s = _accounts[who].stakes[role];
        s.offences += 1;
        if (tombstone || s.offences >= _params.tombstoneOffences) s.slashedOut = true;
        _jail(s);
        emit Slashed(who, role, taken, s.offences, s.slashedOut);
    }

    /// `penalise_silence`: the liveness penalty, burned, and jail; never a tombstone.
    function _penaliseSilence(address validator) internal {
        burned += _slashStake(validator, VALIDATOR, _params.livenessPenalty, currentRound(), false);
        _jail(_accounts[validator].stakes[VALIDATOR]);
    }

    /// `distribute` with two groups: each gets its share (bps) split equally; the rest burns.
    function _distribute(uint64 amount, address[] memory first, uint64 firstBps,
                         address[] memory second, uint64 secondBps) internal {
        uint64 paid = _payGroup(amount, first, firstBps) + _payGroup(amount, second, secondBps);
        burned += amount - paid;
    }

    function _payGroup(uint64 amount, address[] memory group, uint64 shareBps)
        internal
        returns (uint64 paid)
    {
        if (group.length == 0) return 0;
        uint64 each = uint64(uint256(amount) * shareBps / BPS / group.length);
        for (uint256 i = 0; i < group.length; i++) _credit(group[i], each);
        return each * uint64(group.length);
    }

    /// `lock_earnings`: a node's reward, slashable for `unbondingPeriod` rounds.
    function _lockEarnings(address node, uint64 amount) internal {
        uint64 release = currentRound() + _params.unbondingPeriod;
        Locked[] storage locked = _accounts[node].locked;
        if (locked.length != 0 && locked[locked.length - 1].releaseRound == release) {
            locked[locked.length - 1].amount += amount;
        } else {
            locked.push(Locked(release, amount));
            _unlockQueue[release].push(node);
        }
    }

    /// `unlock_earnings`: locked earnings whose release round has come go to the balance.
    function _unlockEarnings(address who) internal {
        Account storage a = _accounts[who];
        uint64 round = currentRound();
        uint256 kept;
        for (uint256 i = 0; i < a.locked.length; i++) {
            Locked memory held = a.locked[i];
            if (held.releaseRound <= round) a.balance += held.amount;
            else a.locked[kept++] = held;
        }
        while (a.locked.length > kept) a.locked.pop();
    }

    // -- Internals: jobs ------------------------------------------------------------------------

    function _job(bytes32 jobId) internal view returns (Job storage j) {
        j = _jobs[jobId];
        if (j.status == 0) revert UnknownJob(jobId);
    }

    function _auditor(Job storage j) internal view returns (address) {
        return j.auditDeadline != NONE ? j.auditors[j.auditors.length - 1] : address(0);
    }

    /// `Job.window_end`: the last round the job may be accused or reported in.
    function _windowEnd(Job storage j) internal view returns (uint64) {
        uint64 start = j.servedRound != NONE ? j.servedRound : j.recordedRound + 1;
        uint64 end = start + _params.challengeWindow;
        uint64 deadline = j.auditDeadline != NONE ? j.auditDeadline : 0;
        return end > deadline ? end : deadline;
    }

    function _hasOpenChallenge(Job storage j) internal view returns (bool) {
        return j.unavailableSince != NONE && j.servedRound == NONE && j.status == PENDING;
    }

    function _isOpenDispute(Job storage j) internal view returns (bool) {
        return j.dispute != bytes32(0) && _disputes[j.dispute].outcome == 0;
    }

    /// `is_settleable_job`.
    function _isSettleable(bytes32 jobId) internal view returns (bool) {
        Job storage j = _jobs[jobId];
        return j.status == PENDING && !j.auditPending && !_isOpenDispute(j)
            && !_hasOpenChallenge(j) && currentRound() > _windowEnd(j);
    }

    /// `has_open_case`: could an open dispute, challenge or audit about what `who` did in
    /// round `since` or before still slash it?
    function _hasOpenCase(address who, uint64 since) internal view returns (bool) {
        bytes32[] storage open = _openDisputes.items;
        for (uint256 i = 0; i < open.length; i++) {
            Dispute storage d = _disputes[open[i]];
            if (who == d.node && _jobs[d.jobId].recordedRound <= since) return true;
            if (d.openedRound <= since && _contains(d.accusers, who)) return true;
        }
        for (uint256 k = 0; k < 2; k++) {
            bytes32[] storage ids = k == 0 ? _openChallenges.items : _openAudits.items;
            for (uint256 i = 0; i < ids.length; i++) {
                Job storage j = _jobs[ids[i]];
                if (j.node == who && j.recordedRound <= since) return true;
            }
        }
        return false;
    }

    function _schedule(bytes32 jobId, uint64 round) internal {
        _settleQueue[round].push(jobId);
    }

    /// `reschedule_settlement`: once what held the job is resolved, unless its first try is due.
    function _reschedule(bytes32 jobId, bool inBeaconRound) internal {
        Job storage j = _jobs[jobId];
        uint64 earliest = _windowEnd(j) + 1;
        uint64 current = currentRound();
        uint64 soonest = inBeaconRound ? current : current + 1;
        uint64 start = j.servedRound != NONE ? j.servedRound : j.recordedRound + 1;
        uint64 firstTry = start + _params.challengeWindow + 1;
        uint64 at = earliest > soonest ? earliest : soonest;
        if (at > firstTry) _schedule(jobId, at);
    }

    /// `close_audit`: the job awaits no auditor any more.
    function _closeAudit(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        if (j.auditPending || j.auditDeadline != NONE) {
            j.auditPending = false;
            j.auditDeadline = NONE;
            _remove(_openAudits, jobId);
        }
    }

    function _releaseInFlight(address node) internal {
        inFlight[node] -= 1;
    }

    /// `refund_job`: the fee back to the client.
    function _refund(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        _credit(j.client, j.fee);
        _closeAudit(jobId);
        j.status = REFUNDED;
        j.closedRound = currentRound();
        _releaseInFlight(j.node);
        emit JobClosed(jobId, REFUNDED);
    }

    /// `settle_job`: the reward into the node's locked earnings, the verification fee to the
    /// auditor that attested VALID (or back to the client).
    function _settle(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        if (j.equivocated) {
            _refund(jobId);
            return;
        }
        _lockEarnings(j.node, j.fee - _params.verificationFee);
        _credit(j.verifier != address(0) ? j.verifier : j.client, _params.verificationFee);
        j.status = SETTLED;
        j.closedRound = currentRound();
        _releaseInFlight(j.node);
        emit JobClosed(jobId, SETTLED);
    }

    /// `punish_equivocation`: slash and tombstone; the reporter (if any) earns its share.
    function _punishEquivocation(address node, bytes32 jobId, address reporter) internal {
        equivocated[node][jobId] = true;
        Job storage j = _jobs[jobId];
        bool ours = j.status != 0 && j.node == node;
        uint64 taken = _punish(node, NODE, _params.equivocationSlash, ours ? j.recordedRound : NONE, true);
        address[] memory rewarded = reporter == address(0) ? new address[](0) : _one(reporter);
        _distribute(taken, rewarded, _params.reporterShareBps, new address[](0), 0);
        if (ours) {
            // The client got two answers: the job settles as a refund, and needs no audit
            j.equivocated = true;
            _closeAudit(jobId);
            if (j.status == PENDING) _reschedule(jobId, false);
        }
        emit Equivocated(node, jobId, reporter);
    }

    // -- Internals: audits -----------------------------------------------------------------------

    /// `draw_sample`: in the job's sample round, is it audited, and by whom.
    function _drawSample(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        bool selected = _sampled(beaconValue(currentRound()), jobId, j.commitmentId);
        if (selected) j.sampled = true;
        if (selected || j.zk) _assignAuditor(jobId);
    }

    /// `assign_auditor`: draw the job's next auditor from this round's value, or give up.
    function _assignAuditor(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        address chosen;
        if (j.auditors.length < MAX_AUDIT_DRAWS) {
            address[] memory excluded = new address[](j.auditors.length + 1);
            excluded[0] = j.node;
            for (uint256 i = 0; i < j.auditors.length; i++) excluded[i + 1] = j.auditors[i];
            chosen = _drawAuditor(jobId, uint16(j.auditors.length), _bondedValidatorsExcept(excluded));
        }
        if (chosen == address(0)) {
            // Nobody is left to ask: the job settles unaudited
            _closeAudit(jobId);
            _reschedule(jobId, true);
            return;
        }
        uint64 current = currentRound();
        uint64 deadline = current + _params.auditWindow;
        j.auditors.push(chosen);
        j.assignedRound = current;
        j.auditDeadline = deadline;
        j.auditPending = true;
        _add(_openAudits, jobId);
        _auditQueue[deadline + 1].push(jobId);
        emit AuditorAssigned(jobId, chosen, current);
    }

    /// `answer_audit`: decisively (VALID, evidence), or undecided and another is drawn.
    function _answerAudit(bytes32 jobId, bool decided) internal {
        if (decided) {
            _closeAudit(jobId);
            _reschedule(jobId, false);
            return;
        }
        _jobs[jobId].auditDeadline = NONE;
        _auditQueue[currentRound() + 1].push(jobId);
    }

    /// `check_audit`: a deadline passed, or an answer was INCONCLUSIVE.
    function _checkAudit(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        if (j.status != PENDING || !j.auditPending || _hasOpenChallenge(j)) return;
        if (j.auditDeadline != NONE) {
            if (j.auditDeadline >= currentRound()) return;
            _penaliseSilence(j.auditors[j.auditors.length - 1]);
        }
        _assignAuditor(jobId);
    }

    // -- Internals: disputes -------------------------------------------------------------------

    /// `committee_candidates`: bonded validators that are not the node, an accuser (and
    /// `accuser`, about to be one), an auditor, or an attester of the job.
    function _committeeCandidates(Job storage j, address accuser) internal view returns (address[] memory) {
        uint256 n = 2 + j.accusers.length + j.auditors.length + j.attestations.length;
        address[] memory excluded = new address[](n);
        uint256 k;
        excluded[k++] = j.node;
        excluded[k++] = accuser;
        for (uint256 i = 0; i < j.accusers.length; i++) excluded[k++] = j.accusers[i];
        for (uint256 i = 0; i < j.auditors.length; i++) excluded[k++] = j.auditors[i];
        for (uint256 i = 0; i < j.attestations.length; i++) excluded[k++] = j.attestations[i].validator;
        return _bondedValidatorsExcept(excluded);
    }

    /// `draw_dispute`: the next committee from this round's value; wait if too few can sit.
    function _drawCommittee(bytes32 disputeId) internal {
        Dispute storage d = _disputes[disputeId];
        Job storage j = _jobs[d.jobId];
        address[] memory candidates = _committeeCandidates(j, j.node);
        uint256 size = _params.committeeSize;
        if (candidates.length < size) return;
        bytes32 drawKey = sha256(abi.encodePacked(DISPUTE_KEY_TAG, d.jobId, uint16(d.draws)));
        bytes32 value = beaconValue(currentRound());
        bytes32[] memory ranks = new bytes32[](candidates.length);
        for (uint256 i = 0; i < candidates.length; i++) {
            ranks[i] = sha256(abi.encodePacked(COMMITTEE_TAG, value, drawKey, _accounts[candidates[i]].key));
        }
        _sortBy(ranks, candidates);
        delete d.committee;
        delete d.votes;
        for (uint256 i = 0; i < size; i++) d.committee.push(candidates[i]);
        d.drawnRound = currentRound();
        d.draws += 1;
        emit CommitteeDrawn(disputeId, d.jobId, d.committee, d.drawnRound);
    }

    /// `conclude_committee`: silent members pay; a strict majority decides, or another
    /// committee is drawn, up to MAX_COMMITTEE_DRAWS, after which it is INCONCLUSIVE.
    function _concludeCommittee(bytes32 disputeId, bool inBeaconRound) internal {
        Dispute storage d = _disputes[disputeId];
        for (uint256 i = 0; i < d.committee.length; i++) {
            if (!_votedIn(d, d.committee[i])) _penaliseSilence(d.committee[i]);
        }
        uint8 outcome = _outcome(d);
        if (outcome != INCONCLUSIVE || d.draws >= MAX_COMMITTEE_DRAWS) {
            _resolveDispute(disputeId, outcome, inBeaconRound);
            return;
        }
        d.drawnRound = NONE;
        delete d.committee;
        delete d.votes;
    }

    function _votedIn(Dispute storage d, address who) internal view returns (bool) {
        for (uint256 i = 0; i < d.votes.length; i++) if (d.votes[i].validator == who) return true;
        return false;
    }

    /// `dispute_outcome`: a strict majority of the whole committee, or INCONCLUSIVE.
    function _outcome(Dispute storage d) internal view returns (uint8) {
        uint256 fraud;
        uint256 valid;
        for (uint256 i = 0; i < d.votes.length; i++) {
            if (d.votes[i].verdict == FRAUD) fraud++;
            else if (d.votes[i].verdict == VALID) valid++;
        }
        if (2 * fraud > d.committee.length) return FRAUD;
        if (2 * valid > d.committee.length) return VALID;
        return INCONCLUSIVE;
    }

    /// `resolve_dispute`: apply the outcome and close the dispute; the job may then settle.
    function _resolveDispute(bytes32 disputeId, uint8 outcome, bool inBeaconRound) internal {
        Dispute storage d = _disputes[disputeId];
        Job storage j = _jobs[d.jobId];
        Params storage p = _params;
        address[] memory majority = _votersFor(d, outcome);
        if (outcome == FRAUD) {
            uint64 taken = _punish(d.node, NODE, p.fraudSlash, j.recordedRound, false);
            // The accuser's share pays for the audit: to the assigned auditors that accused
            address[] memory paid = _auditorsAmong(d.accusers, j.auditors);
            if (paid.length == 0) paid = d.accusers;
            _distribute(taken, paid, p.accuserShareBps, majority, p.committeeShareBps);
            for (uint256 i = 0; i < d.accusers.length; i++) _credit(d.accusers[i], d.bond);
            // Whoever called it VALID was wrong: the auditor, and members outvoted
            address[] memory wrong = _validVerdicts(j, d.votes);
            for (uint256 i = 0; i < wrong.length; i++) {
                burned += _punish(wrong[i], VALIDATOR, p.lazyValidatorSlash, j.recordedRound + 1, false);
            }
            _refund(d.jobId);
        } else if (outcome == VALID) {
            for (uint256 i = 0; i < d.accusers.length; i++) {
                uint64 taken = _punish(d.accusers[i], VALIDATOR, p.falseAccusationSlash, d.openedRound, false);
                _distribute(taken + d.bond, _one(d.node), p.wrongedNodeShareBps, majority, p.committeeShareBps);
            }
        } else {
            for (uint256 i = 0; i < d.accusers.length; i++) _credit(d.accusers[i], d.bond);
        }
        d.outcome = outcome;
        d.closedRound = currentRound();
        _remove(_openDisputes, disputeId);
        if (j.status == PENDING) _reschedule(d.jobId, inBeaconRound);
        emit DisputeResolved(disputeId, d.jobId, outcome);
    }

    /// `resolve_unavailable`: not served in time; the node pays S and the client is refunded.
    function _resolveUnavailable(bytes32 jobId) internal {
        Job storage j = _jobs[jobId];
        uint64 taken = _punish(j.node, NODE, _params.fraudSlash, j.recordedRound, false);
        _distribute(taken, _one(j.availabilityReporter), _params.reporterShareBps, new address[](0), 0);
        _remove(_openChallenges, jobId);
        _refund(jobId);
    }

    function _votersFor(Dispute storage d, uint8 verdict) internal view returns (address[] memory out) {
        uint256 n;
        for (uint256 i = 0; i < d.votes.length; i++) if (d.votes[i].verdict == verdict) n++;
        out = new address[](n);
        n = 0;
        for (uint256 i = 0; i < d.votes.length; i++) {
            if (d.votes[i].verdict == verdict) out[n++] = d.votes[i].validator;
        }
    }

    function _auditorsAmong(address[] storage accusers, address[] storage auditors)
        internal
        view
        returns (address[] memory out)
    {
        out = new address[](accusers.length);
        uint256 n;
        for (uint256 i = 0; i < accusers.length; i++) if (_contains(auditors, accusers[i])) out[n++] = accusers[i];
        assembly ("memory-safe") { mstore(out, n) }
    }

    /// Every validator that called the job VALID, as auditor or in `votes`, once each, in order.
    function _validVerdicts(Job storage j, Vote[] memory votes) internal view returns (address[] memory out) {
        out = new address[](j.attestations.length + votes.length);
        uint256 n;
        for (uint256 i = 0; i < j.attestations.length; i++) {
            if (j.attestations[i].verdict == VALID) n = _appendOnce(out, n, j.attestations[i].validator);
        }
        for (uint256 i = 0; i < votes.length; i++) {
            if (votes[i].verdict == VALID) n = _appendOnce(out, n, votes[i].validator);
        }
        assembly ("memory-safe") { mstore(out, n) }
    }

    function _appendOnce(address[] memory list, uint256 n, address who) internal pure returns (uint256) {
        for (uint256 i = 0; i < n; i++) if (list[i] == who) return n;
        list[n] = who;
        return n + 1;
    }

    // -- Internals: draws ------------------------------------------------------------------------

    function _sampled(bytes32 value, bytes32 jobId, bytes32 commitmentId) internal view returns (bool) {
        bytes32 seed = sha256(abi.encodePacked(SAMPLE_TAG, value, jobId, commitmentId));
        return uint256(uint64(bytes8(seed))) * PPM < uint256(_params.samplePpm) << 64;
    }

    /// `bonded_validators` without `excluded`, in the order they first bonded.
    function _bondedValidatorsExcept(address[] memory excluded) internal view returns (address[] memory out) {
        out = new address[](validators.length);
        uint256 n;
        for (uint256 i = 0; i < validators.length; i++) {
            address v = validators[i];
            if (!isBonded(v, VALIDATOR)) continue;
            bool skip;
            for (uint256 k = 0; k < excluded.length; k++) if (excluded[k] == v) { skip = true; break; }
            if (!skip) out[n++] = v;
        }
        assembly ("memory-safe") { mstore(out, n) }
    }

    /// `protocol.sampling.draw_auditor`: the candidates ranked by key, one indexed by the seed.
    function _drawAuditor(bytes32 jobId, uint16 draw, address[] memory candidates) internal view returns (address) {
        if (candidates.length == 0) return address(0);
        bytes32[] memory keys = new bytes32[](candidates.length);
        for (uint256 i = 0; i < candidates.length; i++) keys[i] = _accounts[candidates[i]].key;
        _sortBy(keys, candidates);
        bytes32 drawKey = sha256(abi.encodePacked(AUDIT_KEY_TAG, jobId, draw));
        bytes32 seed = sha256(abi.encodePacked(COMMITTEE_TAG, beaconValue(currentRound()), drawKey));
        return candidates[uint256(seed) % candidates.length];
    }

    /// Sort `keys` ascending (as byte strings), moving `items` with them (insertion sort: the
    /// lists are the bonded validators).
    function _sortBy(bytes32[] memory keys, address[] memory items) internal pure {
        for (uint256 i = 1; i < keys.length; i++) {
            bytes32 key = keys[i];
            address item = items[i];
            uint256 k = i;
            while (k > 0 && keys[k - 1] > key) {
                keys[k] = keys[k - 1];
                items[k] = items[k - 1];
                k--;
            }
            keys[k] = key;
            items[k] = item;
        }
    }

    function _sorted(bytes32[] storage ids) internal view returns (bytes32[] memory out) {
        out = ids;
        address[] memory none = new address[](out.length);
        _sortBy(out, none);
    }

    function _contains(address[] storage list, address who) internal view returns (bool) {
        for (uint256 i = 0; i < list.length; i++) if (list[i] == who) return true;
        return false;
    }

    function _add(OpenSet storage set, bytes32 id) internal {
        if (set.position[id] != 0) return;
        set.items.push(id);
        set.position[id] = set.items.length;
    }

    function _remove(OpenSet storage set, bytes32 id) internal {
        uint256 position = set.position[id];
        if (position == 0) return;
        bytes32 last = set.items[set.items.length - 1];
        set.items[position - 1] = last;
        set.position[last] = position;
        set.items.pop();
        delete set.position[id];
    }

    function _verifyLeaf(Leaf calldata leaf) internal view {
        bytes32 digest = batchDigest[leaf.node][leaf.round];
        if (digest == bytes32(0) || digest != keccak256(abi.encodePacked(leaf.root, leaf.count))) {
            revert UnknownBatch(leaf.node, leaf.round);
        }
        if (leaf.index >= leaf.count) revert LeafOutOfRange(leaf.index, leaf.count);
        bytes32 hashed = JobTree.leafHash(leaf.jobId, leaf.commitmentId, leaf.outputHash, leaf.proofHash);
        if (leaf.path.length != JobTree.depth(leaf.count)
            || JobTree.rootOf(hashed, leaf.index, leaf.path) != leaf.root) {
            revert InvalidMerkleProof(leaf.node, leaf.round, leaf.index);
        }
    }

    /// `LedgerParams` bounds and `process_set_params`: refuse what the Python genesis refuses.
    function _checkParams(Params memory p) internal pure {
        if (p.samplePpm == 0 || p.samplePpm > PPM) revert UnsafeParams("sample_ppm in 1..PPM");
        if (p.committeeSize == 0 || p.committeeSize > 101) revert UnsafeParams("committee_size in 1..101");
        if (p.challengeWindow == 0 || p.challengeWindow > 10_000) revert UnsafeParams("challenge_window in 1..10000");
        if (p.collusionPpm >= PPM) revert UnsafeParams("collusion_ppm below PPM");
        if (p.accuserShareBps > BPS || p.committeeShareBps > BPS || p.wrongedNodeShareBps > BPS
            || p.reporterShareBps > BPS) revert UnsafeParams("shares at most BPS");
        if (p.availabilityWindow == 0 || p.availabilityWindow > 10_000) revert UnsafeParams("availability_window in 1..10000");
        if (p.unbondingPeriod == 0 || p.unbondingPeriod > 1_000_000) revert UnsafeParams("unbonding_period in 1..1000000");
        if (p.jailPeriod > 1_000_000) revert UnsafeParams("jail_period in 0..1000000");
        if (p.tombstoneOffences == 0 || p.tombstoneOffences > 255) revert UnsafeParams("tombstone_offences in 1..255");
        if (p.auditWindow == 0 || p.auditWindow > 10_000) revert UnsafeParams("audit_window in 1..10000");
        if (p.voteWindow == 0 || p.voteWindow > 10_000) revert UnsafeParams("vote_window in 1..10000");
        // Verify a slash never pays out more than was taken
        if (p.accuserShareBps + p.committeeShareBps > BPS) revert UnsafeParams("accuser + committee share");
        if (p.wrongedNodeShareBps + p.committeeShareBps > BPS) revert UnsafeParams("wronged-node + committee share");
        // Verify every slash deters and can be taken in full from a minimum stake
        uint64[5] memory slashes = [p.fraudSlash, p.equivocationSlash, p.falseAccusationSlash,
                                    p.lazyValidatorSlash, p.livenessPenalty];
        for (uint256 i = 0; i < slashes.length; i++) {
            if (slashes[i] == 0 || slashes[i] > MIN_STAKE) revert UnsafeParams("slash in 1..MIN_STAKE");
        }
        // Verify the accuser's bond is something to lose
        if (p.accuserBond == 0) revert UnsafeParams("accuser_bond positive");
        // Verify no stake and no earnings can leave before a slash they owe is proven
        if (p.unbondingPeriod < liabilityHorizon(p)) revert UnsafeParams("unbonding_period below liability horizon");
        // Verify honest work is the best response and the stake covers what is in flight
        uint256 detection = uint256(p.challengeWindow) + 2;
        if (uint256(p.samplePpm) * (PPM - p.collusionPpm) * (uint256(p.reward) + p.fraudSlash)
            <= uint256(p.computeCost) * PPM * PPM) revert UnsafeParams("PoSP condition p(1-r)(R+S) > C");
        if (uint256(p.fraudSlash) * p.samplePpm < uint256(p.reward) * (PPM - p.samplePpm)) {
            revert UnsafeParams("fabrication condition S >= R(1-p)/p");
        }
        if (uint256(MIN_STAKE) * PPM / (uint256(p.samplePpm) * p.fraudSlash) < detection) {
            revert UnsafeParams("stake at risk p*S*D <= minimum stake");
        }
    }
}
