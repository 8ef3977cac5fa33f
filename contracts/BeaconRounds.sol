// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IBeacon} from "./IBeacon.sol";

/// @title Verified rounds of one beacon, appended strictly in order
/// @notice A withheld round stalls whoever reads the beacon; it can never be skipped, so a
/// round's value cannot be swapped for the next one's (protocol/beacon.py explains why).
abstract contract BeaconRounds is IBeacon {
    /// A round was submitted out of order.
    error RoundOutOfOrder(uint64 expected, uint64 got);
    /// The signature does not verify for the round under the beacon's key.
    error ForgedBeaconRound(uint64 round);
    /// A point is not in the precompiles' uncompressed encoding (128 bytes G1, 256 bytes G2).
    error MalformedPoint(uint256 length);

    event RoundVerified(uint64 indexed round, bytes32 randomness);

    uint64 public immutable firstRound;
    uint64 public roundCount;
    mapping(uint64 round => bytes32) internal _values;

    constructor(uint64 first) {
        firstRound = first;
    }

    function randomness(uint64 round) external view returns (bytes32) {
        return _values[round];
    }

    /// The next round to be verified.
    function nextRound() public view returns (uint64) {
        return firstRound + roundCount;
    }

    function _requireNext(uint64 round) internal view {
        if (round != nextRound()) revert RoundOutOfOrder(nextRound(), round);
    }

    function _append(uint64 round, bytes memory compressedSignature) internal {
        bytes32 value = sha256(compressedSignature);
        _values[round] = value;
        roundCount += 1;
        emit RoundVerified(round, value);
    }
}
