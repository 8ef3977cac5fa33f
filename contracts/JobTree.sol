// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title The Merkle tree over one batch of job commitments
/// @notice A leaf is keccak256(0x00 ‖ job id ‖ commitment id ‖ output hash ‖ proof hash)
/// (the proof hash is keccak256 of the ABI-encoded zk proof and instances, zero for a job
/// without a proof), an inner node
/// keccak256(0x01 ‖ left ‖ right): the tags keep an inner node from passing as a leaf. A
/// batch of n leaves is padded with zero hashes to the next power of two, 2^depth, and a
/// proof is the depth siblings from the leaf up; bit i of the leaf's index says whether the
/// node at height i is a right child. So a proof binds the leaf to its index, and sampling
/// over leaves cannot be dodged by moving a leaf. `slashing.evm.merkle` builds the same tree.
library JobTree {
    /// The most leaves one batch may hold (a proof of depth 20).
    uint32 internal constant MAX_LEAVES = 1 << 20;

    function leafHash(bytes32 jobId, bytes32 commitmentId, bytes32 outputHash, bytes32 proofHash)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked(uint8(0), jobId, commitmentId, outputHash, proofHash));
    }

    /// ⌈log2 count⌉: the length of every proof in a batch of `count` leaves.
    function depth(uint32 count) internal pure returns (uint256 d) {
        while ((uint256(1) << d) < count) d++;
    }

    /// The root that `path` leads to from `leaf` at `index`.
    function rootOf(bytes32 leaf, uint256 index, bytes32[] calldata path)
        internal
        pure
        returns (bytes32 node)
    {
        node = leaf;
        for (uint256 i = 0; i < path.length; i++) {
            node = (index >> i) & 1 == 0
                ? keccak256(abi.encodePacked(uint8(1), node, path[i]))
                : keccak256(abi.encodePacked(uint8(1), path[i], node));
        }
    }
}
