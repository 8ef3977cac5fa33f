"""Fixtures shared by the contract tests: one anvil for the session, a clean chain per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slashing.evm.anvil import Anvil
from slashing.evm.chain import Chain


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """A local EVM node on a free loopback port, started once and stopped at the end."""
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def session_chain(anvil: Anvil) -> Chain:
    return Chain(anvil.url)


@pytest.fixture
def chain(session_chain: Chain) -> Iterator[Chain]:
    """The session's chain, returned to this test's starting state afterwards."""
    snapshot = session_chain.snapshot()
    yield session_chain
    session_chain.revert(snapshot)
