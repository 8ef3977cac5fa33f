// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Bls12381} from "./Bls12381.sol";
import {BeaconRounds} from "./BeaconRounds.sol";

/// @title The devnet's chained BLS beacon, verified on chain
/// @notice Round r's signature is a BLS signature on G2 (Ethereum's proof-of-possession
/// ciphersuite) under a G1 key of "assay/beacon/v1" ‖ r (8 bytes, big endian) ‖ the
/// compressed signature of round r − 1, or the genesis seed for round 0
/// (`protocol.beacon.DevnetBeacon`). The previous signature is proven by its hash, which is
/// the previous round's value.
contract DevnetBeacon is BeaconRounds {
    bytes private constant DST = "BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
    bytes private constant TAG = "assay/beacon/v1";
    /// −G1's generator, uncompressed: e(pk, H(m)) · e(−g1, σ) = 1 is the signature check.
    bytes private constant NEG_G1 =
        hex"0000000000000000000000000000000017f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
        hex"00000000000000000000000000000000114d1d6855d545a8aa7d76c8cf2e21f267816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca";

    /// The previous signature given is not the one whose hash is the previous round's value.
    error WrongPreviousSignature(uint64 round);

    bytes public publicKey;
    bytes32 public immutable genesisSeed;

    constructor(bytes memory publicKeyG1, bytes32 seed) BeaconRounds(0) {
        if (publicKeyG1.length != 128) revert MalformedPoint(publicKeyG1.length);
        publicKey = publicKeyG1;
        genesisSeed = seed;
    }

    /// Verify round `round`, chained to `previous` (the compressed signature of the round
    /// before, or empty for round 0), and append its value.
    function submitRound(uint64 round, bytes calldata signatureG2, bytes calldata previous)
        external
    {
        _requireNext(round);
        bytes memory linked = previous;
        if (round == 0) {
            linked = abi.encodePacked(genesisSeed);
        } else if (sha256(previous) != _values[round - 1]) {
            revert WrongPreviousSignature(round);
        }
        if (signatureG2.length != 256) revert MalformedPoint(signatureG2.length);
        bytes memory message = abi.encodePacked(TAG, round, linked);
        bytes memory hashed = Bls12381.hashToG2(message, DST);
        if (!Bls12381.pairingHolds(publicKey, hashed, NEG_G1, signatureG2)) {
            revert ForgedBeaconRound(round);
        }
        _append(round, Bls12381.compressG2(signatureG2));
    }
}
