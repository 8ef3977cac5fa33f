"""Who is in the simulated network: nodes, validators, clients, and their keys.

Everything here is drawn once, from the run's seed, before the first epoch;
both protocol paths read the same :class:`Population`. Shares become counts
by rounding half up, and kinds take consecutive indices in a fixed order
(strategies as listed, then honest nodes; colluding, lazy, griefing, then
honest validators), so a configuration names the same agents in every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from netsim.config import SimConfig
from netsim.genesis import CANARY_NODES, genesis_events
from protocol.hashing import sha256
from protocol.keys import SigningKey
from slashing.rules import genesis_chain_id

HONEST = "honest"
LAZY = "lazy"
GRIEFING = "griefing"
COLLUDING = "colluding"
VALIDATOR_KINDS = (HONEST, LAZY, GRIEFING, COLLUDING)
NO_GROUP = -1
POPULATION_STREAM = 0
"""Seed-sequence stream of the population draw; epochs use streams 1 and up."""


def share_count(share: float, total: int) -> int:
    return math.floor(share * total + 0.5)


def node_key(seed: int, index: int) -> SigningKey:
    return SigningKey.derive(f"netsim/{seed}/node/{index}")


def validator_key(seed: int, index: int) -> SigningKey:
    return SigningKey.derive(f"netsim/{seed}/validator/{index}")


def client_key(seed: int, index: int) -> SigningKey:
    return SigningKey.derive(f"netsim/{seed}/client/{index}")


def canary_node_key(seed: int, index: int) -> SigningKey:
    return SigningKey.derive(f"netsim/{seed}/canary-node/{index}")


def canary_client_key(seed: int) -> SigningKey:
    """The operator's client: canary jobs look like any client's and are paid by it."""
    return SigningKey.derive(f"netsim/{seed}/canary-client")


@dataclass(frozen=True)
class Population:
    """Per-agent arrays, indexed by node or validator number."""

    config: SimConfig
    node_kind: tuple[str, ...]
    """``honest`` or the kind of the node's strategy."""
    node_strategy: np.ndarray
    """Index into ``config.strategies``, or -1 for honest nodes."""
    node_group: np.ndarray
    """Colluding group of a colluding node, else -1."""
    node_cost: np.ndarray
    """C of one job on this node's hardware: ``cost`` times an efficiency in 1 ± spread."""
    validator_kind: tuple[str, ...]
    validator_group: np.ndarray

    @classmethod
    def draw(cls, config: SimConfig) -> Population:
        n, m = config.nodes, config.validators
        node_strategy = np.full(n, -1, dtype=np.int64)
        node_group = np.full(n, NO_GROUP, dtype=np.int64)
        kinds = [HONEST] * n
        start = 0
        colluders = 0
        for index, strategy in enumerate(config.strategies):
            count = min(share_count(strategy.share, n), n - start)
            for i in range(start, start + count):
                node_strategy[i] = index
                kinds[i] = strategy.kind
                if strategy.kind == COLLUDING:
                    node_group[i] = colluders % config.groups
                    colluders += 1
            start += count
        validator_group = np.full(m, NO_GROUP, dtype=np.int64)
        validator_kinds = [HONEST] * m
        start = 0
        for kind, share in ((COLLUDING, config.colluding), (LAZY, config.lazy),
                            (GRIEFING, config.griefing)):
            count = min(share_count(share, m), m - start)
            for i in range(start, start + count):
                validator_kinds[i] = kind
                if kind == COLLUDING:
                    validator_group[i] = (i - start) % config.groups
            start += count
        rng = np.random.default_rng([config.seed, POPULATION_STREAM])
        spread = config.cost_spread
        efficiency = rng.uniform(1.0 - spread, 1.0 + spread, n) if spread else np.ones(n)
        return cls(
            config=config,
            node_kind=tuple(kinds),
            node_strategy=node_strategy,
            node_group=node_group,
            node_cost=config.cost * efficiency,
            validator_kind=tuple(validator_kinds),
            validator_group=validator_group,
        )

    @cached_property
    def validator_ids(self) -> tuple[bytes, ...]:
        """Real Ed25519 public keys: the assignment and committee draws hash them."""
        return tuple(
            validator_key(self.config.seed, i).public.raw for i in range(self.config.validators)
        )

    @cached_property
    def node_ids(self) -> tuple[bytes, ...]:
        return tuple(node_key(self.config.seed, i).public.raw for i in range(self.config.nodes))

    @cached_property
    def client_ids(self) -> tuple[bytes, ...]:
        return tuple(client_key(self.config.seed, i).public.raw for i in range(self.config.clients))

    @cached_property
    def canary_client_id(self) -> bytes:
        return canary_client_key(self.config.seed).public.raw

    @cached_property
    def canary_node_ids(self) -> tuple[bytes, ...]:
        return tuple(canary_node_key(self.config.seed, i).public.raw for i in range(CANARY_NODES))

    @cached_property
    def model_id(self) -> bytes:
        return sha256(b"netsim/model")

    @cached_property
    def chain_id(self) -> bytes:
        """The simulated network's chain id, which every message of the run names."""
        return genesis_chain_id(*genesis_events(self.config))
