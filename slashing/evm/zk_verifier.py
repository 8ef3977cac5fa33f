"""A zk model's verifier contract: EZKL's generated Solidity, compiled by the pinned solc.

``ezkl.create_evm_verifier`` renders a Halo2 verifier for a model's verifying
key, settings and SRS, then tries to download a Solidity compiler to produce an
ABI. We need only the Solidity: the download is pointed at a closed loopback
proxy so it fails at once without leaving the machine, and the rendered file is
compiled by the same pinned ``solc`` as ``contracts/`` (:func:`compile_source`).
The contract's ``verifyProof(bytes, uint256[])`` is what ``AssayLedger``
calls through ``IZkVerifier`` to judge ``INVALID_PROOF`` evidence.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slashing.evm.chain import Chain, Sender
from slashing.evm.toolchain import Artifact, compile_source

CONTRACT = "Halo2Verifier"
CLOSED_PROXY = "http://127.0.0.1:9"
"""The discard port on loopback: nothing listens, so a fetch through it fails at once."""


class VerifierGenerationFailed(RuntimeError):
    """EZKL rendered no verifier for the key and settings given."""


@contextmanager
def _offline() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")}
    os.environ.update(HTTPS_PROXY=CLOSED_PROXY, HTTP_PROXY=CLOSED_PROXY, NO_PROXY="")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def render_verifier(vk_path: Path, settings_path: Path, srs_path: Path) -> str:
    """EZKL's Solidity verifier for one model's verifying key, settings and SRS."""
    import ezkl

    with tempfile.TemporaryDirectory(prefix="assay-verifier-") as tmp:
        sol, abi = Path(tmp) / "Verifier.sol", Path(tmp) / "Verifier.abi"

        async def render() -> Any:
            return await ezkl.create_evm_verifier(
                str(vk_path), str(settings_path), str(sol), str(abi), str(srs_path), False
            )

        error: Exception | None = None
        with _offline():
            try:
                asyncio.run(render())
            except RuntimeError as exc:  # its ABI step wants a compiler from the network
                error = exc
        if not sol.is_file() or not sol.stat().st_size:
            raise VerifierGenerationFailed(f"ezkl wrote no verifier: {error}")
        return sol.read_text()


def compile_verifier(solidity: str) -> Artifact:
    return compile_source("Halo2Verifier.sol", solidity)[CONTRACT]


def deploy_verifier(chain: Chain, artifact: Artifact, sender: Sender) -> str:
    """Deploy a compiled verifier; its address."""
    return str(chain.deploy_artifact(artifact, sender=sender).address)


def proof_arguments(instances: Sequence[bytes]) -> list[int]:
    """A proof's public instances (32-byte little-endian field elements) as ``uint256``."""
    return [int.from_bytes(instance, "little") for instance in instances]
