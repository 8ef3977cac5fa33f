"""Service configuration: a TOML file, then ``ASSAY_*`` environment variables, then flags.

Each role has a dataclass of settings with defaults. :func:`load` reads the
role's table from a TOML file (``[node]``, ``[validator]`` or ``[ledger]``),
overrides it with ``ASSAY_<SETTING>`` environment variables and then with
command-line values, in that order of increasing precedence, the way
Ethereum's validator clients do. Unknown keys and values of the wrong type are
refused with a message naming the key. Settings marked secret are replaced by
``"<redacted>"`` in :func:`effective`, which ``assay config show`` prints.
Passwords are never settings: keystores take a password *file*.

An empty ``registry`` or ``zk_store`` means the default under ``$ASSAY_HOME``
(``models`` and ``zk``, the directories ``assay models`` and ``assay zk
setup`` fill).

Default ports sit beside each service's own HTTP port (the node's API on
8000, a validator's ``/health`` on 8010, the ledger's on 8020, metrics one
above each), off the Prometheus exporter range 9100–9999, which is allocated
in full (9400 is NVIDIA's dcgm-exporter, found on most GPU hosts).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "ASSAY_"
REDACTED = "<redacted>"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, key or variable."""


def _secret(default: str = "") -> Any:
    return field(default=default, metadata={"secret": True})


@dataclass(frozen=True)
class NodeConfig:
    """``assay node run``: an inference node."""

    keystore: str = "node-key.json"
    password_file: str = ""
    data_dir: str = "node-data"
    registry: str = ""
    zk_store: str = ""
    listen: str = "/ip4/127.0.0.1/tcp/9000"
    bootstrap: list[str] = field(default_factory=list)
    ledger: str = ""
    stake: int = 20_000
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    api_key: str = _secret()
    client_keystore: str = ""
    client_password_file: str = ""
    fee: int = 110
    threads: int = 1
    max_new_tokens: int = 256
    rate_limit: float = 20.0
    """Jobs per second one caller may start (a libp2p peer or an HTTP address), on average."""
    rate_burst: int = 50
    """Jobs one caller may start at once before ``rate_limit`` applies."""
    max_queued_jobs: int = 64
    """Jobs waiting for the model beyond which new ones are refused as overload (429)."""
    max_num_seqs: int = 16
    """Sequences an llm model's running batch holds at once (vLLM's ``--max-num-seqs``)."""
    max_model_len: int = 0
    """Prompt plus new tokens of one llm job; 0 is the model's own context (vLLM's
    ``--max-model-len``)."""
    metrics: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8001
    log_format: str = "text"
    cheat_rate: float = 0.0


@dataclass(frozen=True)
class ValidatorConfig:
    """``assay validator run``: samples, re-executes, attests, accuses and votes."""

    keystore: str = "validator-key.json"
    password_file: str = ""
    data_dir: str = "validator-data"
    registry: str = ""
    zk_store: str = ""
    listen: str = "/ip4/127.0.0.1/tcp/9200"
    bootstrap: list[str] = field(default_factory=list)
    ledger: str = ""
    stake: int = 20_000
    threads: int = 1
    outputs_kept: int = 65_536
    """Audited ``llm`` outputs the journal keeps to serve to committees judging a node's
    record, the newest; older ones are deleted (a record reaches back 128 sampled jobs of a
    node and model, and the ledger keeps 256)."""
    http_host: str = "127.0.0.1"
    http_port: int = 8010
    """``/health``."""
    metrics: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8011
    log_format: str = "text"


@dataclass(frozen=True)
class LedgerConfig:
    """``assay ledger run``: the devnet's ledger and beacon behind libp2p, settled in SQLite
    or on an EVM chain."""

    keystore: str = "ledger-key.json"
    password_file: str = ""
    database: str = "ledger.sqlite"
    beacon_secret_file: str = "beacon.secret"
    genesis: str = "genesis.toml"
    zk_store: str = ""
    listen: str = "/ip4/127.0.0.1/tcp/9100"
    bootstrap: list[str] = field(default_factory=list)
    round_seconds: float = 1.0
    faucet: list[str] = field(default_factory=list)
    """Public keys (hex) that may mint tokens on a devnet (``assay devnet fund``); none on a
    network whose tokens matter."""
    faucet_limit: int = 1_000_000
    """Most tokens one faucet request mints."""
    http_host: str = "127.0.0.1"
    http_port: int = 8020
    """``/health``."""
    metrics: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8021
    log_format: str = "text"
    ledger_backend: str = "sqlite"
    """Where the ledger settles: ``sqlite`` (its event log alone) or ``evm`` (the log for
    admission and queries, every accepted event settled on the contracts at ``rpc_url``)."""
    rpc_url: str = ""
    """With ``evm``: the chain's JSON-RPC endpoint."""
    ledger_contract: str = ""
    """With ``evm``: the ``AssayLedger`` contract's address."""
    beacon_contract: str = ""
    """With ``evm``: the ``DevnetBeacon`` contract the ledger contract reads rounds from."""
    chain_keystore: str = ""
    """With ``evm``: the operator's chain key, an Ethereum keystore (``assay chain key``)."""
    chain_password_file: str = ""
    """The chain keystore's password, in a file (it also encrypts the relayed accounts' keys)."""
    chain_accounts: str = "chain-accounts"
    """With ``evm``: where the service keeps the chain keys it relays accounts' transactions
    with."""


ROLES: Mapping[str, type[Any]] = {
    "node": NodeConfig,
    "validator": ValidatorConfig,
    "ledger": LedgerConfig,
}
C = TypeVar("C")


def _field_type(cls: type[Any], name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check a TOML value, or parse an environment/flag string, as ``kind``."""
    origin = typing.get_origin(kind)
    if origin in (list, types.GenericAlias) or kind == list[str]:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{where} must be a list of strings")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                        "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string, got {value!r}")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc


def role_of(data: Mapping[str, Any], path: Path) -> str:
    """The one role table a config file holds."""
    found = [role for role in ROLES if role in data]
    if len(found) != 1:
        raise ConfigError(f"{path} must hold exactly one of the tables {list(ROLES)}")
    return found[0]


def load(
    cls: type[C],
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Defaults < TOML file < ``ASSAY_*`` environment < ``overrides`` (the CLI's flags)."""
    role = next(name for name, kind in ROLES.items() if kind is cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
        table = data.get(role)
        if not isinstance(table, dict):
            raise ConfigError(f"{path} has no [{role}] table")
        base = Path(path).resolve().parent
        for key, value in table.items():
            if key not in names:
                raise ConfigError(f"{path}: unknown setting [{role}].{key}")
            values[key] = _resolve(
                _coerce(value, _field_type(cls, key), f"{path}: [{role}].{key}"), key, base
            )
    env = os.environ if environ is None else environ
    for name in names:
        variable = ENV_PREFIX + name.upper()
        if variable in env:
            values[name] = _coerce(env[variable], _field_type(cls, name), variable)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in names:
            raise ConfigError(f"unknown setting {name!r} for {role}")
        values[name] = _coerce(value, _field_type(cls, name), f"--{name.replace('_', '-')}")
    return cls(**values)


PATH_SETTINGS = frozenset(
    {"keystore", "password_file", "data_dir", "registry", "client_keystore",
     "client_password_file", "database", "beacon_secret_file", "genesis", "zk_store",
     "chain_keystore", "chain_password_file", "chain_accounts"}
)


def _resolve(value: Any, key: str, base: Path) -> Any:
    """Relative paths in a file are relative to the file, so a config can move with its keys."""
    if key in PATH_SETTINGS and isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    return value


def effective(config: Any) -> dict[str, Any]:
    """The settings as a plain map, with secret values redacted."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = REDACTED if f.metadata.get("secret") and value else value
    return out


def to_toml(role: str, settings: Mapping[str, Any]) -> str:
    """A ``[role]`` TOML table of ``settings`` (strings, numbers, booleans, string lists)."""
    lines = [f"[{role}]"]
    for key, value in settings.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
