// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IBeacon} from "./IBeacon.sol";
import {IZkVerifier} from "./IZkVerifier.sol";
import {JobTree} from "./JobTree.sol";
import {LedgerRounds} from "./LedgerRounds.sol";
import {LedgerState} from "./LedgerState.sol";

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
/// The beacon-round processing, audits and disputes (`advance`, `attest`, `accuse`) run
/// as `LedgerRounds`'s code on this contract's storage, by delegatecall: together the
/// rules are too large for one contract under EIP-170.
contract AssayLedger is LedgerState {
    address public immutable operator;
    /// The code of `advance`, `attest` and `accuse`, run on this contract's storage.
    address public immutable rounds;

    constructor(IBeacon beacon_, Params memory params_, LedgerRounds rounds_) LedgerState(beacon_) {
        _checkParams(params_);
        // Verify the rounds contract reads the same beacon, so both count the same rounds
        if (rounds_.beacon() != beacon_) revert WrongRoundsContract(address(rounds_));
        operator = msg.sender;
        rounds = address(rounds_);
        _params = params_;
    }

    // -- The rounds, audits and disputes: LedgerRounds, by delegatecall ---------------------------

    /// `process_beacon_round`: the next round the beacon verified, and what is due in it
    /// (`LedgerRounds.advance`).
    function advance() external {
        _delegate();
    }

    /// `process_attest` and `process_vote` (`LedgerRounds.attest`).
    function attest(bytes32, uint8, uint64) external {
        _delegate();
    }

    /// `process_mismatch` (`LedgerRounds.accuse`).
    function accuse(bytes32, bytes32, uint64, bytes32) external {
        _delegate();
    }

    /// Run this call's data as `LedgerRounds`'s code on this storage; its revert (a custom
    /// error) or its return is this call's.
    function _delegate() private {
        address target = rounds;
        assembly ("memory-safe") {
            let data := mload(0x40)
            calldatacopy(data, 0, calldatasize())
            let ok := delegatecall(gas(), target, data, calldatasize(), 0, 0)
            returndatacopy(data, 0, returndatasize())
            if iszero(ok) { revert(data, returndatasize()) }
            return(data, returndatasize())
        }
    }

    // -- Views ------------------------------------------------------------------------------------

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

    // -- Tokens and stake -------------------------------------------------------------------------

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

    // -- Batched commitments and jobs -------------------------------------------------------------

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

    // -- Evidence ---------------------------------------------------------------------------------

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

    // -- Canaries and zk models (the operator's) --------------------------------------------------

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

    // -- Internals --------------------------------------------------------------------------------

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
