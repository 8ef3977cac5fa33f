// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title What the ledger reads from a beacon: verified rounds, in order, and their values
/// @notice A round's value is sha256 of its compressed signature, as in `protocol.beacon`.
interface IBeacon {
    /// The first round the beacon accepts; the ledger's clock starts there.
    function firstRound() external view returns (uint64);

    /// How many rounds have been verified (rounds firstRound .. firstRound + count − 1).
    function roundCount() external view returns (uint64);

    /// The value of a verified round; zero when it is not verified (yet).
    function randomness(uint64 round) external view returns (bytes32);
}
