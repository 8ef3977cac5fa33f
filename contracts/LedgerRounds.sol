// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IBeacon} from "./IBeacon.sol";
import {LedgerState} from "./LedgerState.sol";

/// @title The ledger's beacon-round processing, audits and disputes
/// @notice `advance`, `attest` and `accuse` of `AssayLedger`, run by its delegatecall on
/// its storage (the layout of `LedgerState`, which both inherit). Deployed once, before
/// the ledger, which is given its address. Called directly it would act on its own empty
/// storage, so it refuses (`NotDelegated`).
contract LedgerRounds is LedgerState {
    address private immutable _self;

    constructor(IBeacon beacon_) LedgerState(beacon_) {
        _self = address(this);
    }

    function _onlyDelegated() internal view {
        if (address(this) == _self) revert NotDelegated();
    }

    // -- The clock --------------------------------------------------------------------------------

    /// `process_beacon_round`: the next round the beacon verified, and what is due in it.
    function advance() external {
        _onlyDelegated();
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

    // -- Audits and votes -------------------------------------------------------------------------

    /// `process_attest`: the assigned auditor's answer (VALID or INCONCLUSIVE; FRAUD comes
    /// as evidence), or a committee member's vote in the job's open dispute.
    function attest(bytes32 jobId, uint8 verdict, uint64 beaconRound) external {
        _onlyDelegated();
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

    // -- Accusations ------------------------------------------------------------------------------

    /// `process_mismatch`: re-execution disagrees; opens the job's one dispute or joins it,
    /// escrowing the accuser bond. `evidenceId` is the content id of the signed evidence
    /// off chain; the first one names the dispute.
    function accuse(bytes32 jobId, bytes32 observedHash, uint64 beaconRound, bytes32 evidenceId)
        external
    {
        _onlyDelegated();
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

    // -- Internals: earnings and settlement -------------------------------------------------------

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

    /// `is_settleable_job`.
    function _isSettleable(bytes32 jobId) internal view returns (bool) {
        Job storage j = _jobs[jobId];
        return j.status == PENDING && !j.auditPending && !_isOpenDispute(j)
            && !_hasOpenChallenge(j) && currentRound() > _windowEnd(j);
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

    // -- Internals: audits ------------------------------------------------------------------------

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

    // -- Internals: disputes ----------------------------------------------------------------------

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

    // -- Internals: draws -------------------------------------------------------------------------

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
}
