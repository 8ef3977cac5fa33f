// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IBeacon} from "./IBeacon.sol";
import {JobTree} from "./JobTree.sol";

/// @title Assay's ledger on an EVM chain: stake, batched commitments, equivocation
/// @notice The Python rules in `slashing/rules.py` are the specification; each function
/// here names the `process_*` rule it follows and makes its checks in the same order, with
/// a custom error named for each. An account is its chain address: the transaction's
/// sender authenticates it, so no signature is checked on chain. The clock is the beacon:
/// the current round is the latest round the beacon contract verified.
///
/// A node records jobs as one Merkle root per batch per round (`postBatch`), not one
/// transaction per job: the root binds every (job id, commitment id) leaf and its index,
/// and the sender authenticates the batch. Two different leaves for one job id under one
/// node's roots are equivocation, slashed on that evidence alone (`reportEquivocation`).
contract AssayLedger {
    // -- Constants (slashing/constants.py) -------------------------------------------------
    uint256 internal constant BPS = 10_000;
    uint256 internal constant PPM = 1_000_000;
    uint64 internal constant MAX_SUPPLY = type(uint64).max;
    uint64 internal constant MIN_STAKE = 10_000; // MIN_STAKE[node] == MIN_STAKE[validator]
    uint256 internal constant MAX_UNBONDING_ENTRIES = 7;
    uint256 internal constant MAX_AUDIT_DRAWS = 3;
    uint256 internal constant MAX_COMMITTEE_DRAWS = 3;
    uint8 internal constant NODE = 0;
    uint8 internal constant VALIDATOR = 1;
    /// `protocol.sampling`'s domain tag of a sample seed.
    bytes internal constant SAMPLE_TAG = "assay/v1/sample\x00";

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
        uint8 offences;
        bool slashedOut; // the tombstone
    }

    /// Stake on its way out, slashable for offences up to `startedRound` (one slot).
    struct Unbonding {
        uint8 role;
        uint64 amount;
        uint64 startedRound;
        uint64 releaseRound;
    }

    struct Account {
        uint64 balance;
        bool known;
        Stake[2] stakes; // [node, validator]
        Unbonding[] unbonding;
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
        bytes32[] path;
    }

    // -- Errors, one per rule ----------------------------------------------------------------
    error NotOperator(address sender);
    error UnsafeParams(string rule);
    error UnknownRole(uint8 role);
    error ZeroAmount();
    error AmountOutOfRange(uint256 amount, uint256 bound);
    error UnknownAccount(address account);
    error SlashedOut(address account, uint8 role);
    error InsufficientFunds(address account, uint256 available, uint256 needed);
    error BelowMinimumStake(address account, uint8 role, uint256 left);
    error TooManyUnbondings(address account);
    error NothingToWithdraw(address account, uint64 round);
    error BeaconNotStarted();
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

    // -- Events --------------------------------------------------------------------------------
    event Minted(address indexed account, uint64 amount);
    event Bonded(address indexed account, uint8 role, uint64 amount);
    event Unbonded(address indexed account, uint8 role, uint64 amount, uint64 releaseRound);
    event Withdrawn(address indexed account, uint64 amount);
    event Slashed(address indexed account, uint8 role, uint64 taken, uint8 offences, bool tombstoned);
    event BatchPosted(address indexed node, uint64 indexed round, bytes32 root, uint32 count);
    event Equivocated(address indexed node, bytes32 indexed jobId, address reporter);

    // -- Storage ---------------------------------------------------------------------------------
    address public immutable operator;
    IBeacon public immutable beacon;
    Params internal _params;
    uint64 public minted;
    uint64 public burned;
    mapping(address account => Account) internal _accounts;
    /// keccak256(root ‖ count) of each node's batch per round: one slot per batch.
    mapping(address node => mapping(uint64 round => bytes32)) public batchDigest;
    mapping(address node => mapping(bytes32 jobId => bool)) public equivocated;

    constructor(IBeacon beacon_, Params memory params_) {
        _checkParams(params_);
        operator = msg.sender;
        beacon = beacon_;
        _params = params_;
    }

    // -- Views -------------------------------------------------------------------------------------

    function params() external view returns (Params memory) {
        return _params;
    }

    function account(address who)
        external
        view
        returns (uint64 balance, bool known, Stake memory node, Stake memory validator,
                 Unbonding[] memory unbonding)
    {
        Account storage a = _accounts[who];
        return (a.balance, a.known, a.stakes[NODE], a.stakes[VALIDATOR], a.unbonding);
    }

    /// The latest round the beacon verified; reverts before the first.
    function currentRound() public view returns (uint64) {
        uint64 count = beacon.roundCount();
        if (count == 0) revert BeaconNotStarted();
        return beacon.firstRound() + count - 1;
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
        bytes32 value = beacon.randomness(leaf.round + 1);
        if (value == bytes32(0)) revert SampleRoundNotRevealed(leaf.round + 1);
        bytes32 seed = sha256(abi.encodePacked(SAMPLE_TAG, value, leaf.jobId, leaf.commitmentId));
        return uint256(uint64(bytes8(seed))) * PPM < uint256(_params.samplePpm) << 64;
    }

    // -- Tokens and stake ------------------------------------------------------------------------

    /// `process_mint`: the operator creates tokens (genesis, client deposits).
    function mint(address to, uint64 amount) external {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        if (amount == 0) revert ZeroAmount();
        // Verify the supply stays within 64 bits
        if (uint256(minted) + amount > MAX_SUPPLY) revert AmountOutOfRange(amount, MAX_SUPPLY - minted);
        _credit(to, amount);
        minted += amount;
        emit Minted(to, amount);
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
        s.amount = uint64(total);
        a.balance -= amount;
        emit Bonded(msg.sender, role, amount);
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
        uint64 release = round + _params.unbondingPeriod;
        s.amount = left;
        a.unbonding.push(Unbonding(role, amount, round, release));
        emit Unbonded(msg.sender, role, amount, release);
    }

    /// `process_withdraw`: pay out every unbonding entry whose period is over.
    function withdraw() external {
        Account storage a = _known(msg.sender);
        uint64 round = currentRound();
        uint256 kept;
        uint64 released;
        bool any;
        for (uint256 i = 0; i < a.unbonding.length; i++) {
            Unbonding memory entry = a.unbonding[i];
            if (entry.releaseRound <= round) {
                released += entry.amount;
                any = true;
            } else {
                a.unbonding[kept++] = entry;
            }
        }
        // Verify some unbonding stake is released
        if (!any) revert NothingToWithdraw(msg.sender, round);
        while (a.unbonding.length > kept) a.unbonding.pop();
        a.balance += released;
        emit Withdrawn(msg.sender, released);
    }

    // -- Batched commitments -------------------------------------------------------------------

    /// One Merkle root over `count` (job id, commitment id) leaves, from a bonded node, once
    /// per round: the round is the current one, so the value that samples the batch (the
    /// next round's) is unknown when its root is fixed.
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

    /// Whether `leaf` is in its node's batch of its round: reverts naming what is wrong.
    function verifyLeaf(Leaf calldata leaf) external view returns (bool) {
        _verifyLeaf(leaf);
        return true;
    }

    // -- Offences -----------------------------------------------------------------------------------

    /// `process_equivocation`: two different leaves for one job id under one node's batches,
    /// reported by a bonded validator. Self-contained: the node posted both roots from its
    /// account. The leaves are not jobs the ledger recorded, so when the offence was committed
    /// is unknown and every unbonding entry is reachable, as in the rule for a job not on the
    /// ledger; the node is tombstoned at once and the reporter earns its share.
    function reportEquivocation(Leaf calldata a, Leaf calldata b) external {
        address node = a.node;
        // Verify the reporter is a bonded validator
        if (!isBonded(msg.sender, VALIDATOR)) revert NotBonded(msg.sender, VALIDATOR);
        // Verify nobody accuses themself
        if (msg.sender == node) revert SelfAccusation(msg.sender);
        // Verify both leaves are the node's, for one job, and differ
        if (b.node != node || a.jobId != b.jobId || a.commitmentId == b.commitmentId) {
            revert NotEquivocation(a.jobId, b.jobId);
        }
        _verifyLeaf(a);
        _verifyLeaf(b);
        // Verify this equivocation was not slashed already
        if (equivocated[node][a.jobId]) revert AlreadySlashedForEquivocation(node, a.jobId);
        equivocated[node][a.jobId] = true;
        uint64 taken = _punish(node, NODE, _params.equivocationSlash, type(uint64).max, true);
        address[] memory reporter = new address[](1);
        reporter[0] = msg.sender;
        _distribute(taken, reporter, _params.reporterShareBps);
        emit Equivocated(node, a.jobId, msg.sender);
    }

    // -- Internals -------------------------------------------------------------------------------

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

    function _verifyLeaf(Leaf calldata leaf) internal view {
        bytes32 digest = batchDigest[leaf.node][leaf.round];
        if (digest == bytes32(0) || digest != keccak256(abi.encodePacked(leaf.root, leaf.count))) {
            revert UnknownBatch(leaf.node, leaf.round);
        }
        if (leaf.index >= leaf.count) revert LeafOutOfRange(leaf.index, leaf.count);
        bytes32 hashed = JobTree.leafHash(leaf.jobId, leaf.commitmentId);
        if (leaf.path.length != JobTree.depth(leaf.count)
            || JobTree.rootOf(hashed, leaf.index, leaf.path) != leaf.root) {
            revert InvalidMerkleProof(leaf.node, leaf.round, leaf.index);
        }
    }

    /// `slash_stake`: bonded stake first, then unbonding entries of the role started at or
    /// after `offenceRound` (all of them when it is unknown: type(uint64).max), oldest first.
    function _slashStake(address who, uint8 role, uint64 amount, uint64 offenceRound)
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
            bool reachable = offenceRound == type(uint64).max || entry.startedRound >= offenceRound;
            if (entry.role == role && reachable && taken < amount) {
                uint64 take = entry.amount < amount - taken ? entry.amount : amount - taken;
                taken += take;
                entry.amount -= take;
            }
            if (entry.amount != 0) a.unbonding[kept++] = entry;
        }
        while (a.unbonding.length > kept) a.unbonding.pop();
        if (s.amount < MIN_STAKE) s.slashedOut = true;
    }

    /// `punish`: slash, count the offence, tombstone at the limit (or at once), and jail.
    function _punish(address who, uint8 role, uint64 amount, uint64 offenceRound, bool tombstone)
        internal
        returns (uint64 taken)
    {
        taken = _slashStake(who, role, amount, offenceRound);
        Stake storage s = _accounts[who].stakes[role];
        s.offences += 1;
        if (tombstone || s.offences >= _params.tombstoneOffences) s.slashedOut = true;
        if (_params.jailPeriod != 0) {
            uint64 release = currentRound() + _params.jailPeriod + 1;
            if (release > s.jailedUntil) s.jailedUntil = release;
        }
        emit Slashed(who, role, taken, s.offences, s.slashedOut);
    }

    /// `distribute` with one group: each recipient gets its share; the rest and dust burn.
    function _distribute(uint64 amount, address[] memory recipients, uint64 shareBps) internal {
        uint64 paid;
        if (recipients.length != 0) {
            uint64 each = uint64(uint256(amount) * shareBps / BPS / recipients.length);
            for (uint256 i = 0; i < recipients.length; i++) _credit(recipients[i], each);
            paid = each * uint64(recipients.length);
        }
        burned += amount - paid;
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

    /// `liability_horizon`: the most rounds between an offence and the slash that proves it.
    function liabilityHorizon(Params memory p) public pure returns (uint256) {
        uint256 audits = MAX_AUDIT_DRAWS * (uint256(p.auditWindow) + 1);
        uint256 window = uint256(p.challengeWindow) + 1 > audits ? uint256(p.challengeWindow) + 1 : audits;
        uint256 dispute = 1 + MAX_COMMITTEE_DRAWS * (uint256(p.voteWindow) + 1);
        return window + p.availabilityWindow + p.challengeWindow + dispute + p.challengeWindow;
    }
}
