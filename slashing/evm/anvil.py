"""A local EVM node (anvil, from the pinned npm package) on a free loopback port.

Tests, the chain benchmark and ``assay devnet up --chain`` start one and stop
it; it listens on 127.0.0.1 only, runs the Prague hard fork (EIP-2537's
BLS12-381 precompiles) and mines each transaction as it arrives. It enforces EIP-170's
limit on deployed code (24 576 bytes), as a real chain does.
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import TracebackType

from web3 import Web3

from slashing.evm.toolchain import EVM_VERSION, anvil_binary

START_TIMEOUT_S = 30.0
FUNDED_ACCOUNTS = 10


class AnvilFailed(RuntimeError):
    """Anvil did not start, or stopped answering."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_answering(url: str, chain_id: int, process: subprocess.Popen[bytes],
                   timeout: float = START_TIMEOUT_S) -> None:
    """Wait until the anvil ``process`` answers on ``url`` with ``chain_id``."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 2}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr \
                else ""
            raise AnvilFailed(f"anvil exited with {process.returncode}: {detail}")
        try:
            if w3.eth.chain_id == chain_id:
                return
        except Exception:  # not listening yet
            time.sleep(0.05)
    raise AnvilFailed(f"anvil did not answer on {url} within {timeout:.0f} s")


class Anvil:
    """One anvil process; a context manager that starts it and always stops it."""

    def __init__(self, port: int | None = None, chain_id: int = 31337) -> None:
        self.port = port if port is not None else free_port()
        self.chain_id = chain_id
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The anvil command line: loopback only, Prague, funded test accounts, no chatter."""
        return [
            str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port),
            "--hardfork", EVM_VERSION, "--chain-id", str(self.chain_id),
            "--accounts", str(FUNDED_ACCOUNTS), "--silent",
        ]

    def start(self) -> Anvil:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_answering(self.url, self.chain_id, self.process)
        except AnvilFailed:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
