"""netsim: simulated Assay networks run on the real ledger rules and sampling policy.

A run is a population of inference nodes, validators and clients (``population``)
whose agents make choices each epoch (``behaviour``) and a protocol that
judges them. The protocol comes in two paths that must agree:

* ``reference`` builds real signed messages and folds them through
  :func:`slashing.rules.process_event` on a :class:`slashing.State`;
* ``fast`` makes the same decisions with the same hash rules
  (:func:`protocol.sampling.sampled`, :func:`verifier.sampling.assigned_validator`,
  :func:`protocol.sampling.draw_committee`) but keeps the money in numpy arrays,
  which is what lets a million jobs run in seconds.

Both return an :class:`~netsim.outcome.Outcome`; ``metrics`` turns it into the
per-node, per-validator and per-epoch tables, ``output`` writes a run folder,
and ``sweep`` runs grids of configurations on a process pool or on Ray.
"""

from netsim.config import ConfigError, SimConfig, load_config
from netsim.outcome import Outcome
from netsim.run import run_tables, simulate

__all__ = ["ConfigError", "Outcome", "SimConfig", "load_config", "run_tables", "simulate"]
