"""Before the first job: fund everyone and have the ledger accept the parameters.

The parameters go through the ledger's own ``SetParams`` rule, so a
configuration the network would refuse (say, p so low that
``p(1−r)(R+S) > C`` fails for the ledger's estimate of C) is refused here
with the ledger's message, whichever path runs it.
"""

from __future__ import annotations

from netsim.beacon import ChainBeacon
from netsim.config import ConfigError, SimConfig
from slashing import LedgerRuleError, RegisterBeacon, SetParams, State, apply_event
from slashing import constants as c

INT64_SUPPLY = min(c.MAX_SUPPLY, 2**63 - 1)

class ParamsRefused(ValueError):
    """The ledger's ``SetParams`` rule refused the configuration's parameters."""


def genesis_events(config: SimConfig) -> tuple[RegisterBeacon, SetParams]:
    """The events that fix the network, and so its chain id."""
    beacon = ChainBeacon(config.seed)
    return RegisterBeacon(public_key=beacon.public_key, first_round=0), SetParams(config.ledger)


def check_params(config: SimConfig) -> None:
    register, set_params = genesis_events(config)
    try:
        apply_event(apply_event(State(), register), set_params)
    except LedgerRuleError as exc:
        raise ParamsRefused(str(exc)) from exc


def validator_float(config: SimConfig, total_jobs: int) -> int:
    """Each validator's free balance beside its bond, for accuser bonds: one per job, so a
    bond is never short, whichever jobs it accuses. Outcomes report balances without it."""
    return config.ledger.accuser_bond * max(total_jobs, 1)


CANARY_NODES = 32
"""The operator's canary nodes: a caught canary jails its node (and the third tombstones it),
so the operator keeps a pool and uses the first that may take jobs."""
CANARY_STAKE = 10 * c.MIN_STAKE[c.NODE]
"""Each canary node's stake: its in-flight limit must hold a few epochs of canaries."""


def canary_funds(config: SimConfig, total_jobs: int) -> int:
    """The operator's canary client: the fees of at most one canary per job."""
    return config.fee * total_jobs if config.canaries else 0


def client_funds(config: SimConfig, total_jobs: int) -> int:
    """Each client's mint: the fees of every job it pays for (job i is paid by client i mod n).

    The fast path keeps money in int64, so the whole supply must fit in 63 bits
    (the ledger's own cap is 64).
    """
    per_client = -(-total_jobs // config.clients)
    funds = config.fee * per_client
    supply = (
        funds * config.clients
        + config.node_bond * config.nodes
        + (config.validator_bond + validator_float(config, total_jobs)) * config.validators
        + canary_funds(config, total_jobs) + CANARY_STAKE * CANARY_NODES
    )
    if supply > INT64_SUPPLY:
        raise ConfigError(
            f"fees and bonds need {supply} tokens, more than netsim's supply cap {INT64_SUPPLY}"
        )
    return funds
