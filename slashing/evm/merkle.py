"""The Merkle tree over a batch of job commitments, as ``contracts/JobTree.sol`` builds it.

A leaf is ``keccak256(0x00 ‖ job id ‖ commitment id)``, an inner node
``keccak256(0x01 ‖ left ‖ right)``; a batch of n leaves is padded with zero
hashes to 2^⌈log2 n⌉, and a leaf's proof is its siblings from the bottom up,
their sides given by the bits of its index. A node keeps the tree of each
batch it posts, and hands a leaf's proof to whoever audits or accuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils.crypto import keccak

MAX_LEAVES = 1 << 20
"""``JobTree.MAX_LEAVES``."""


def leaf_hash(job_id: bytes, commitment_id: bytes) -> bytes:
    return keccak(b"\x00" + job_id + commitment_id)


def _parent(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def depth(count: int) -> int:
    """⌈log2 count⌉, the length of every proof in a batch of ``count`` leaves."""
    return max(count - 1, 0).bit_length()


@dataclass(frozen=True)
class JobBatch:
    """The (job id, commitment id) leaves of one batch and every level of their tree."""

    leaves: tuple[tuple[bytes, bytes], ...]
    levels: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, leaves: list[tuple[bytes, bytes]]) -> JobBatch:
        if not 1 <= len(leaves) <= MAX_LEAVES:
            raise ValueError(f"a batch holds 1..{MAX_LEAVES} leaves, got {len(leaves)}")
        for job_id, commitment_id in leaves:
            if len(job_id) != 32 or len(commitment_id) != 32:
                raise ValueError("job ids and commitment ids are 32 bytes")
        level = [leaf_hash(j, c) for j, c in leaves]
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
