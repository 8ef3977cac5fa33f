// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Bls12381} from "./Bls12381.sol";
import {BeaconRounds} from "./BeaconRounds.sol";

/// @title drand quicknet rounds, verified on chain
/// @notice Scheme bls-unchained-g1-rfc9380: round r's signature is a BLS signature on G1 of
/// sha256(r as 8 big-endian bytes) under the network's G2 public key, with the DST below.
/// The submitter gives the signature uncompressed; the contract compresses it to derive
/// the round's value, so one signature has one value.
contract DrandBeacon is BeaconRounds {
    bytes private constant DST = "BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_";
    /// −G2's generator, uncompressed: e(σ, −g2) · e(H(m), pk) = 1 is the signature check.
    bytes private constant NEG_G2 =
        hex"00000000000000000000000000000000024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326a805bbefd48056c8c121bdb8"
        hex"0000000000000000000000000000000013e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac7d055d042b7e"
        hex"000000000000000000000000000000000d1b3cc2c7027888be51d9ef691d77bcb679afda66c73f17f9ee3837a55024f78c71363275a75d75d86bab79f74782aa"
        hex"0000000000000000000000000000000013fa4d4a0ad8b1ce186ed5061789213d993923066dddaf1040bc3ff59f825c78df74f2d75467e25e0f55f8a00fa030ed";

    bytes public publicKey;
    uint64 public immutable genesisTime;
    uint64 public immutable period;

    constructor(bytes memory publicKeyG2, uint64 genesis, uint64 seconds_, uint64 first)
        BeaconRounds(first)
    {
        if (publicKeyG2.length != 256) revert MalformedPoint(publicKeyG2.length);
        publicKey = publicKeyG2;
        genesisTime = genesis;
        period = seconds_;
    }

    /// Verify round `round` and append its value.
    function submitRound(uint64 round, bytes calldata signatureG1) external {
        _requireNext(round);
        if (!verify(round, signatureG1)) revert ForgedBeaconRound(round);
        _append(round, Bls12381.compressG1(signatureG1));
    }

    /// Whether `signatureG1` is drand's signature of `round`.
    function verify(uint64 round, bytes calldata signatureG1) public view returns (bool) {
        if (signatureG1.length != 128) revert MalformedPoint(signatureG1.length);
        bytes memory message = abi.encodePacked(sha256(abi.encodePacked(round)));
        bytes memory hashed = Bls12381.hashToG1(message, DST);
        return Bls12381.pairingHolds(signatureG1, NEG_G2, hashed, publicKey);
    }

    /// The drand round current at `timestamp` (drand's own formula; 0 before genesis).
    function roundAt(uint64 timestamp) public view returns (uint64) {
        if (timestamp < genesisTime) return 0;
        return (timestamp - genesisTime) / period + 1;
    }
}
