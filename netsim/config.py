"""A simulation's configuration: TOML in, one checked, fully resolved record out.

The TOML file names only what differs from the defaults; :func:`resolve`
fills in the rest (ledger parameters from :meth:`LedgerParams.default`), so
the resolved form written into every run folder says everything the run
depended on. Overrides (``--set`` and sweep grids) address keys by their
dotted path, ``nodes.strategy.0.rate``, or by a short alias from
:data:`ALIASES` (``p``, ``slash``, ``R``, ``C``, ``r``, ``q``, ``k``).

Money and ledger parameters are integers as in the ledger; behaviour
(shares, rates, costs) is float, since agents' choices are not protocol state.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import MalformedMessage
from protocol.sampling import PPM
from slashing import LedgerParams
from slashing import constants as c

PATHS = ("fast", "reference")
ARRIVALS = ("fixed", "poisson")
STRATEGY_KINDS = ("cheater", "adaptive", "colluding")

ALIASES: Mapping[str, str] = {
    "p": "ledger.sample_ppm",
    "slash": "ledger.fraud_slash",
    "R": "ledger.reward",
    "k": "ledger.committee_size",
    "C": "nodes.cost",
    "r": "validators.colluding",
    "q": "nodes.strategy.0.rate",
}
"""Short names for the symbols of the papers; ``p`` is a probability, stored as ppm."""


class ConfigError(ValueError):
    """A configuration the simulator refuses; the message names the key."""


@dataclass(frozen=True)
class Strategy:
    """A share of the inference nodes that cheat.

    ``rate`` is q, the chance a job is run on a cheaper model; ``saving`` the
    fraction of the job's compute cost C that this saves. An ``adaptive``
    cheater starts at ``rate`` and adds ``step`` for each epoch in a row in
    which none of its jobs was sampled, up to ``max_rate``. ``colluding``
    nodes are covered by the colluding validators of their group.
    """

    kind: str
    share: float
    rate: float
    saving: float = 1.0
    step: float = 0.0
    max_rate: float = 1.0


@dataclass(frozen=True)
class SimConfig:
    seed: int
    epochs: int
    jobs: int
    arrivals: str
    path: str
    clients: int
    nodes: int
    node_bond: int
    cost: float
    cost_spread: float
    offline: float
    rejoin: float
    strategies: tuple[Strategy, ...]
    validators: int
    validator_bond: int
    lazy: float
    griefing: float
    grief_rate: float
    colluding: float
    groups: int
    ledger: LedgerParams
    canaries: float = 0.0
    """The operator's canaries: this share of each epoch's jobs is added as canary jobs,
    recorded the epoch after their commitment is planted and revealed once final."""

    @property
    def fee(self) -> int:
        """Every job pays the most the ledger allows, so a node earns exactly R."""
        return self.ledger.reward + self.ledger.verification_fee

    def to_dict(self) -> dict[str, Any]:
        """The resolved TOML tree: what :func:`resolve` would rebuild this config from."""
        return {
            "seed": self.seed,
            "epochs": self.epochs,
            "jobs": self.jobs,
            "arrivals": self.arrivals,
            "path": self.path,
            "clients": self.clients,
            "canaries": self.canaries,
            "nodes": {
                "count": self.nodes,
                "bond": self.node_bond,
                "cost": self.cost,
                "cost_spread": self.cost_spread,
                "offline": self.offline,
                "rejoin": self.rejoin,
                "strategy": [dataclasses.asdict(s) for s in self.strategies],
            },
            "validators": {
                "count": self.validators,
                "bond": self.validator_bond,
                "lazy": self.lazy,
                "griefing": self.griefing,
                "grief_rate": self.grief_rate,
                "colluding": self.colluding,
                "groups": self.groups,
            },
            "ledger": dataclasses.asdict(self.ledger),
        }

    def with_overrides(self, overrides: Mapping[str, object]) -> SimConfig:
        tree = self.to_dict()
        for key, value in overrides.items():
            set_key(tree, key, value)
        return resolve(tree)


_TOP: dict[str, Any] = {
    "seed": 0,
    "epochs": 20,
    "jobs": 2_000,
    "arrivals": "fixed",
    "path": "fast",
    "clients": 4,
    "canaries": 0.0,
}
_NODES: dict[str, Any] = {
    "count": 20,
    "bond": 20_000,
    "cost": 50.0,
    "cost_spread": 0.0,
    "offline": 0.0,
    "rejoin": 0.5,
    "strategy": [],
}
_VALIDATORS: dict[str, Any] = {
    "count": 10,
    "bond": 20_000,
    "lazy": 0.0,
    "griefing": 0.0,
    "grief_rate": 0.0,
    "colluding": 0.0,
    "groups": 1,
}
_STRATEGY: dict[str, Any] = {"saving": 1.0, "step": 0.0, "max_rate": 1.0}


def _int(key: str, value: object, low: int, high: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key} must be an integer in {low}..{high}, got {value!r}")
    return value


def _fraction(key: str, value: object, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= high):
        raise ConfigError(f"{key} must be between 0 and {high:g}, got {value!r}")
    return number


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ConfigError(f"{key} must be a non-negative number, got {value!r}")
    return float(value)


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")
    assert isinstance(value, str)
    return value


def _table(key: str, value: object, defaults: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table, got {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown key(s) in {key}: {unknown}; known: {sorted(defaults)}")
    return {**defaults, **value}


def _strategy(index: int, raw: object) -> Strategy:
    key = f"nodes.strategy.{index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key} must be a table, got {raw!r}")
    for needed in ("kind", "share", "rate"):
        if needed not in raw:
            raise ConfigError(f"{key} needs '{needed}'")
    table = _table(key, raw, {"kind": None, "share": None, "rate": None, **_STRATEGY})
    strategy = Strategy(
        kind=_choice(f"{key}.kind", table["kind"], STRATEGY_KINDS),
        share=_fraction(f"{key}.share", table["share"]),
        rate=_fraction(f"{key}.rate", table["rate"]),
        saving=_fraction(f"{key}.saving", table["saving"]),
        step=_fraction(f"{key}.step", table["step"]),
        max_rate=_fraction(f"{key}.max_rate", table["max_rate"]),
    )
    if strategy.max_rate < strategy.rate:
        raise ConfigError(f"{key}.max_rate {strategy.max_rate} is below its rate {strategy.rate}")
    return strategy


def _ledger(raw: object) -> LedgerParams:
    defaults = dataclasses.asdict(LedgerParams.default())
    table = _table("ledger", raw, defaults)
    try:
        return LedgerParams(**table)
    except MalformedMessage as exc:
        raise ConfigError(f"ledger: {exc}") from exc


def resolve(tree: Mapping[str, Any]) -> SimConfig:
    """Check a TOML tree and fill in every default; raise :class:`ConfigError` naming the key."""
    top = _table("the config", dict(tree), {**_TOP, "nodes": {}, "validators": {}, "ledger": {}})
    nodes = _table("nodes", top["nodes"], _NODES)
    validators = _table("validators", top["validators"], _VALIDATORS)
    if not isinstance(nodes["strategy"], list):
        raise ConfigError(f"nodes.strategy must be a list of tables, got {nodes['strategy']!r}")
    strategies = tuple(_strategy(i, s) for i, s in enumerate(nodes["strategy"]))
    config = SimConfig(
        seed=_int("seed", top["seed"], 0),
        epochs=_int("epochs", top["epochs"], 1, 1_000_000),
        jobs=_int("jobs", top["jobs"], 0, 10**9),
        arrivals=_choice("arrivals", top["arrivals"], ARRIVALS),
        path=_choice("path", top["path"], PATHS),
        clients=_int("clients", top["clients"], 1, 10_000),
        nodes=_int("nodes.count", nodes["count"], 1, 10_000_000),
        node_bond=_int("nodes.bond", nodes["bond"], c.MIN_STAKE[c.NODE], c.MAX_SUPPLY // 4),
        cost=_number("nodes.cost", nodes["cost"]),
        cost_spread=_fraction("nodes.cost_spread", nodes["cost_spread"], 0.99),
        offline=_fraction("nodes.offline", nodes["offline"]),
        rejoin=_fraction("nodes.rejoin", nodes["rejoin"]),
        strategies=strategies,
        validators=_int("validators.count", validators["count"], 1, 100_000),
        validator_bond=_int(
            "validators.bond", validators["bond"], c.MIN_STAKE[c.VALIDATOR], c.MAX_SUPPLY // 4
        ),
        lazy=_fraction("validators.lazy", validators["lazy"]),
        griefing=_fraction("validators.griefing", validators["griefing"]),
        grief_rate=_fraction("validators.grief_rate", validators["grief_rate"]),
        colluding=_fraction("validators.colluding", validators["colluding"]),
        groups=_int("validators.groups", validators["groups"], 1, 10_000),
        ledger=_ledger(top["ledger"]),
        canaries=_fraction("canaries", top["canaries"]),
    )
    if sum(s.share for s in strategies) > 1.0 + 1e-9:
        raise ConfigError("the shares of nodes.strategy add up to more than 1")
    if config.lazy + config.griefing + config.colluding > 1.0 + 1e-9:
        raise ConfigError("validators.lazy + griefing + colluding add up to more than 1")
    return config


def load_config(path: Path, overrides: Mapping[str, object] | None = None) -> SimConfig:
    """Read a TOML config, apply overrides, and resolve it."""
    try:
        tree = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    for key, value in (overrides or {}).items():
        set_key(tree, key, value)
    return resolve(tree)


def set_key(tree: dict[str, Any], key: str, value: object) -> None:
    """Set ``key`` (dotted path or alias) in a TOML tree; ``p`` takes a probability."""
    path = ALIASES.get(key, key)
    if key == "p":
        probability = _fraction("p", value)
        value = round(probability * PPM)
    parts = path.split(".")
    node: Any = tree
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"cannot set {key}: {where} is not an existing list index")
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, [] if part == "strategy" else {})
        else:
            raise ConfigError(f"cannot set {key}: {where} is not a table")
    if not isinstance(node, dict):
        raise ConfigError(f"cannot set {key}: its parent is not a table")
    node[parts[-1]] = value


def parse_value(text: str) -> object:
    """A command-line value: an integer, a float, or else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_assignment(text: str) -> tuple[str, object]:
    """``key=value`` from ``--set``."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set wants key=value, got {text!r}")
    return key.strip(), parse_value(raw.strip())
