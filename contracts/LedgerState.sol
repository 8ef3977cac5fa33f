// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IBeacon} from "./IBeacon.sol";
import {IZkVerifier} from "./IZkVerifier.sol";

/// @title The ledger's storage, types, errors and the rules both of its contracts apply
/// @notice `AssayLedger` and `LedgerRounds` both inherit this contract and declare no
/// state of their own, so their storage layouts are one: `AssayLedger` runs
/// `LedgerRounds`'s code (the beacon-round processing, audits and disputes) on its own
/// storage by delegatecall. One contract holding every rule would be about 31 KB of
/// runtime code, past EIP-170's 24 576-byte limit on deployed code. The internal rules
/// here are compiled into whichever of the two uses them.
abstract contract LedgerState {
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
    /// `LedgerRounds` reached other than by the ledger's delegatecall.
    error NotDelegated();
    /// The rounds contract given to the ledger reads another beacon.
    error WrongRoundsContract(address rounds);

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

    constructor(IBeacon beacon_) {
        beacon = beacon_;
        firstRound = beacon_.firstRound();
    }

    // -- Views and rules both contracts apply ------------------------------------------------

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

    // -- Internals: accounts and money ------------------------------------------------------------

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

    // -- Internals: jobs --------------------------------------------------------------------------

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

    // -- Internals: draws and sets ----------------------------------------------------------------

    function _sampled(bytes32 value, bytes32 jobId, bytes32 commitmentId) internal view returns (bool) {
        bytes32 seed = sha256(abi.encodePacked(SAMPLE_TAG, value, jobId, commitmentId));
        return uint256(uint64(bytes8(seed))) * PPM < uint256(_params.samplePpm) << 64;
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
}
