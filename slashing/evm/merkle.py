"""The Merkle tree over a batch of job commitments, as ``contracts/JobTree.sol`` builds it.

A leaf is ``keccak256(0x00 ‖ job id ‖ commitment id ‖ output hash ‖ proof hash)`` (the
proof hash is :func:`proof_hash` of a zk job's proof, zero otherwise), an inner node
``keccak256(0x01 ‖ left ‖ right)``; a batch of n leaves is padded with zero
hashes to 2^⌈log2 n⌉, and a leaf's proof is its siblings from the bottom up,
their sides given by the bits of its index. A node keeps the tree of each
batch it posts, and hands a leaf's proof to whoever audits or accuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

MAX_LEAVES = 1 << 20
"""``JobTree.MAX_LEAVES``."""


NO_PROOF = bytes(32)


@dataclass(frozen=True)
class JobLeaf:
    """What a node commits to for one job: the job, its signed commitment's content id, the
    output's hash (what a served output must hash to) and the hash of its zk proof."""

    job_id: bytes
    commitment_id: bytes
    output_hash: bytes
    proof_hash: bytes = NO_PROOF

    def hash(self) -> bytes:
        return keccak(
            b"\x00" + self.job_id + self.commitment_id + self.output_hash + self.proof_hash
        )


def proof_hash(proof: bytes, instances: Sequence[int]) -> bytes:
    """``keccak256(abi.encode(proof, instances))``: what a zk job's leaf binds."""
    return keccak(abi_encode(["bytes", "uint256[]"], [proof, list(instances)]))


def _parent(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def depth(count: int) -> int:
    """⌈log2 count⌉, the length of every proof in a batch of ``count`` leaves."""
    return max(count - 1, 0).bit_length()


@dataclass(frozen=True)
class JobBatch:
    """The leaves of one batch and every level of their tree."""

    leaves: tuple[JobLeaf, ...]
    levels: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, leaves: Sequence[JobLeaf]) -> JobBatch:
        if not 1 <= len(leaves) <= MAX_LEAVES:
            raise ValueError(f"a batch holds 1..{MAX_LEAVES} leaves, got {len(leaves)}")
        for item in leaves:
            sizes = {len(item.job_id), len(item.commitment_id), len(item.output_hash),
                     len(item.proof_hash)}
            if sizes != {32}:
                raise ValueError("a leaf's job id, commitment id and hashes are 32 bytes each")
        level = [item.hash() for item in leaves]
        level += [bytes(32)] * ((1 << depth(len(leaves))) - len(level))
        levels = [tuple(level)]
        while len(level) > 1:
            level = [_parent(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            levels.append(tuple(level))
        return cls(tuple(leaves), tuple(levels))

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    @property
    def count(self) -> int:
        return len(self.leaves)

    def proof(self, index: int) -> list[bytes]:
        """The siblings of leaf ``index`` from the bottom level up."""
        if not 0 <= index < self.count:
            raise IndexError(f"leaf {index} is not in a batch of {self.count}")
        return [level[(index >> height) ^ 1] for height, level in enumerate(self.levels[:-1])]
