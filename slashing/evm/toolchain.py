"""The EVM backend's toolchain: the pinned Solidity compiler and local EVM node from npm.

``make install`` runs ``npm ci`` against the committed ``package-lock.json``, which
puts ``solc`` (the compiler's JavaScript build) and ``@foundry-rs/anvil`` (its
platform binary ships inside the package) in ``node_modules/``. Compiling reads
every ``.sol`` file under ``contracts/`` and caches the compiler's output under
``build/``, keyed by the hash of the sources and settings, so only a change
recompiles.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from protocol.hashing import sha256

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
NODE_MODULES = ROOT / "node_modules"
BUILD = ROOT / "build"

EVM_VERSION = "prague"
"""The hard fork the contracts target: Prague brings EIP-2537's BLS12-381 precompiles."""
COMPILER_SETTINGS: dict[str, Any] = {
    "evmVersion": EVM_VERSION,
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": True,
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


class ToolchainMissing(RuntimeError):
    """The npm packages are not installed: run ``make install`` (it runs ``npm ci``)."""


class CompileError(RuntimeError):
    """The compiler refused the contracts; the message holds its errors."""


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_size: int


def _platform_package() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    if arch is None or system is None:
        raise ToolchainMissing(f"anvil ships no binary for {sys.platform}/{machine}")
    return f"anvil-{system}-{arch}"


def anvil_binary() -> Path:
    """The local EVM node's executable, from the pinned ``@foundry-rs/anvil`` package."""
    path = NODE_MODULES / "@foundry-rs" / _platform_package() / "bin" / "anvil"
    if not path.is_file():
        raise ToolchainMissing(f"{path} is missing: run `make install` (npm ci) first")
    return path


_COMPILE = (
    "const solc = require(process.argv[1]); let input = '';"
    "process.stdin.on('data', c => input += c);"
    "process.stdin.on('end', () => process.stdout.write(solc.compile(input)));"
)
"""Standard JSON in, standard JSON out, through the package's own ``compile`` (its CLI prints
notes on stdout before the JSON)."""


def solc_package() -> Path:
    path = NODE_MODULES / "solc"
    if not (path / "soljson.js").is_file():
        raise ToolchainMissing(f"{path} is missing: run `make install` (npm ci) first")
    return path


def _sources() -> dict[str, str]:
    return {
        path.relative_to(CONTRACTS).as_posix(): path.read_text()
        for path in sorted(CONTRACTS.rglob("*.sol"))
    }


def _solc_version() -> str:
    package = json.loads((NODE_MODULES / "solc" / "package.json").read_text())
    return str(package["version"])


GENERATED_SETTINGS: dict[str, Any] = {
    **COMPILER_SETTINGS, "viaIR": False, "optimizer": {"enabled": True, "runs": 1},
}
"""For generated verifiers (EZKL's Halo2 verifier is one block of inline assembly): the IR
pipeline adds nothing to it but compile time."""


@cache
def compile_contracts() -> dict[str, Artifact]:
    """Every contract under ``contracts/``, by name, compiled once per source change."""
    return _compile(_sources(), COMPILER_SETTINGS)


def compile_source(filename: str, text: str) -> dict[str, Artifact]:
    """One generated Solidity file (a zk model's verifier), compiled by the pinned solc."""
    return _compile({filename: text}, GENERATED_SETTINGS)


def _compile(sources: dict[str, str], settings: dict[str, Any]) -> dict[str, Artifact]:
    package = solc_package()
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": settings,
    }
    encoded = json.dumps(request, sort_keys=True).encode()
    key = sha256(_solc_version().encode() + b"\x00" + encoded).hex()[:24]
    cached = BUILD / f"contracts-{key}.json"
    if cached.is_file():
        output = json.loads(cached.read_text())
    else:
        run = subprocess.run(
            ["node", "-e", _COMPILE, str(package)], input=encoded, capture_output=True,
            check=False, timeout=900,
        )
        if run.returncode != 0:
            raise CompileError(run.stderr.decode(errors="replace")[-4000:])
        output = json.loads(run.stdout)
        errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
        if errors:
            raise CompileError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
        BUILD.mkdir(exist_ok=True)
        cached.write_text(json.dumps(output))
    artifacts: dict[str, Artifact] = {}
    for contracts in output["contracts"].values():
        for name, compiled in contracts.items():
            bytecode = compiled["evm"]["bytecode"]["object"]
            if not bytecode:
                continue  # an interface or an abstract contract
            artifacts[name] = Artifact(
                name=name,
                abi=compiled["abi"],
                bytecode=bytes.fromhex(bytecode),
                deployed_size=len(compiled["evm"]["deployedBytecode"]["object"]) // 2,
            )
    return artifacts
