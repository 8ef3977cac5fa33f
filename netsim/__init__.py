"""netsim: simulated Assay networks run on the real ledger rules and sampling policy.

A run is a population of inference nodes, validators and clients (``population``)
whose agents make choices each epoch (``behaviour``) and a protocol that
judges them. The protocol comes in two paths that must agree:

* ``reference`` builds real signed messages and folds them through
  :func:`slashing.rules.process_event` on a :class:`slashing.State`;
* ``fast`` makes the same decisions with the same hash rules
  (:func:`protocol.sampling.sampled`, :func:`protocol.sampling.draw_auditor`,
  :func:`protocol.sampling.draw_dispute_committee`) but keeps the money in numpy
  arrays, which is what lets a million jobs run in seconds.

Both name every job by its real message ids (``jobs``) and draw every choice
from the same seeded streams, so both return the same
:class:`~netsim.outcome.Outcome`; ``metrics`` turns it into the per-node,
per-validator and per-epoch tables, ``simulation`` repeats a configuration
over seeds, ``intervals`` gives each figure a 95 % interval over them,
``degeneration`` warns when a run did not run what it says, ``output``
writes run folders, ``grid`` runs sweeps on a process pool or on Ray, and
``plots`` draws them.

For notebooks, ``netsim.run(config, seeds=…)`` and ``netsim.sweep(config,
grid, seeds=…)`` return pandas data frames (:mod:`netsim.frames`, imported
on first use, since pandas is slow to import).
"""

from typing import Any

from netsim.config import ConfigError, SimConfig, load_config
from netsim.outcome import Outcome
from netsim.simulation import run_seeds, run_tables, simulate

__all__ = [
    "ConfigError",
    "Outcome",
    "SimConfig",
    "load_config",
    "run",
    "run_seeds",
    "run_tables",
    "simulate",
    "sweep",
]


def __getattr__(name: str) -> Any:
    """``netsim.run`` and ``netsim.sweep``, from :mod:`netsim.frames` on first use."""
    if name in ("run", "sweep"):
        from netsim import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'netsim' has no attribute {name!r}")
