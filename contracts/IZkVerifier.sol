// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title What the ledger asks of a zk model's verifier contract
/// @notice The signature of the verifier EZKL generates (`ezkl create-evm-verifier`): true
/// when the proof holds for the public instances; it may also revert on a malformed proof.
interface IZkVerifier {
    function verifyProof(bytes calldata proof, uint256[] calldata instances) external returns (bool);
}
