"""Separate OS processes on loopback: a ledger, nodes and validators started by ``assay devnet``.

All slow: each process imports torch and libp2p. Every process is started in
its own session and killed in the fixture's ``finally``, pass or fail.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import trio

from assay.commands import devnet
from assay.keys import SigningKey
from assay.net.host import PeerHost
from assay.net.ledger_client import LedgerClient
from slashing import Ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    network = devnet.create(tmp_path_factory.mktemp("devnet") / "net", nodes=3, validators=2,
                            cheaters=1, sample_ppm=500_000, round_seconds=1.0)
    try:
        devnet.up(network, timeout=150)
        yield network
    finally:
        devnet.down(network)


def client(member: devnet.Member, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{member.http_port}/v1", api_key="devnet",
                         max_retries=0, timeout=timeout)


def ledger_query(net: devnet.Devnet, op: str, **fields: object) -> dict[str, object]:
    address = net.member("ledger").address

    async def main() -> dict[str, object]:
        host = PeerHost(SigningKey.generate(), "/ip4/127.0.0.1/tcp/0", [address])
        async with host.running():
            ledger = LedgerClient(host, address)
            with trio.fail_after(20):
                while True:
                    try:
                        return await ledger.call(op, **fields)
                    except Exception:  # the ledger may be restarting
                        await trio.sleep(0.2)

    return trio.run(main)


def stake(net: devnet.Devnet, name: str) -> tuple[int, bool]:
    account = ledger_query(net, "account", account=bytes.fromhex(net.member(name).pubkey))
    return int(account["node_stake"]), bool(account["node_slashed_out"])  # type: ignore[arg-type]


def test_openai_client_gets_completions_and_the_cheater_is_slashed(net: devnet.Devnet) -> None:
    honest = net.member("node-0")
    api = client(honest)
    assert {m.id for m in api.models.list().data} == {"gpt2", "mlp"}
    completion = api.completions.create(model="gpt2", prompt="Hello", max_tokens=8, seed=7,
                                        temperature=0)
    assert completion.usage is not None and completion.usage.completion_tokens == 8
    assay = (completion.model_extra or {})["assay"]
    assert len(bytes.fromhex(assay["signature"])) == 64 and assay["mode"] == "llm"
    again = api.completions.create(model="gpt2", prompt="Hello", max_tokens=8, seed=7,
                                   temperature=0)
    assert again.choices[0].text == completion.choices[0].text  # seeded: same tokens
    streamed = list(api.completions.create(model="gpt2", prompt="Hello", max_tokens=8, seed=7,
                                           temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == completion.choices[0].text
    assert (streamed[-1].model_extra or {})["assay"]["mode"] == "llm"
    chat = api.chat.completions.create(model="gpt2", max_tokens=6, seed=3,
                                       messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.role == "assistant" and chat.usage is not None

    cheater = net.member("node-2")
    deadline = time.monotonic() + 120
    sent = 0
    while not stake(net, "node-2")[1]:
        assert time.monotonic() < deadline, "the cheater was not slashed in time"
        for member in net.by_role("node"):
            try:
                client(member).completions.create(model="gpt2", prompt=f"job {sent}",
                                                  max_tokens=4, seed=sent)
            except openai.APIError:
                assert member is cheater  # refused once slashed out
            sent += 1
        time.sleep(1.0)
    time.sleep(3)
    for name in ("node-0", "node-1"):
        assert stake(net, name) == (devnet.STAKE, False), name


def test_sigkill_mid_job_gives_a_clear_error_and_the_node_rejoins(net: devnet.Devnet) -> None:
    victim = net.member("node-1")
    errors: list[BaseException] = []

    def long_job() -> None:
        try:
            client(victim).completions.create(model="gpt2", prompt="x" * 500, max_tokens=256,
                                              seed=1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=long_job)
    thread.start()
    time.sleep(0.3)
    devnet.stop(victim, signal.SIGKILL, grace=5)
    thread.join(30)
    assert errors and isinstance(errors[0], openai.APIConnectionError)
    # the ledger's log still verifies, and the node comes back and serves again
    with Ledger.open(Path(net.directory) / "ledger.sqlite") as ledger:
        assert ledger.verify() > 0
    devnet.start(net, victim)
    devnet.wait_healthy(net, [victim], timeout=90)
    done = client(victim).completions.create(model="gpt2", prompt="back", max_tokens=4, seed=2)
    assert done.choices[0].text is not None


def test_sigterm_drains_and_exits_zero(net: devnet.Devnet) -> None:
    member = net.member("node-0")
    assert devnet.stop(member, signal.SIGTERM, grace=40) == 0
    devnet.start(net, member)
    devnet.wait_healthy(net, [member], timeout=90)


def test_validator_restart_resumes_without_attesting_twice(net: devnet.Devnet) -> None:
    from assay.keystore import SigningJournal

    victim = net.member("validator-0")
    journal_path = Path(net.directory) / "data" / "validator-0" / "journal.sqlite"
    devnet.stop(victim, signal.SIGKILL, grace=5)
    devnet.start(net, victim)
    devnet.wait_healthy(net, [victim], timeout=90)
    for i in range(12):
        client(net.member("node-0")).completions.create(model="gpt2", prompt=f"after {i}",
                                                        max_tokens=4, seed=100 + i)
    time.sleep(4)
    journal = SigningJournal(journal_path)
    audits = journal.count("audit")
    journal.close()
    assert audits > 0
    with Ledger.open(Path(net.directory) / "ledger.sqlite") as ledger:
        me = bytes.fromhex(victim.pubkey)
        for job in ledger.state.jobs.values():
            voters = [v for v, _ in job.attestations]
            assert voters.count(me) <= 1


def test_ledger_restart_nodes_reconnect_and_continue(net: devnet.Devnet) -> None:
    ledger = net.member("ledger")
    assert devnet.stop(ledger, signal.SIGTERM, grace=20) == 0
    devnet.start(net, ledger)
    devnet.wait_healthy(net, [ledger], timeout=60)
    node = net.member("node-0")
    devnet.wait_healthy(net, [node], timeout=60)
    done = client(node).completions.create(model="gpt2", prompt="again", max_tokens=4, seed=9)
    assert done.usage is not None


def test_assay_infer_submits_a_signed_job_and_checks_the_commitment(
    net: devnet.Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    from assay.cli import main

    node = net.member("node-0")
    keys = Path(net.directory) / "keys"
    common = ["infer", "--node", node.address, "--keystore", str(keys / "node-1-client.json"),
              "--password-file", str(keys / "node-1-client.pass"), "--json"]
    assert main([*common, "--model", net.models["gpt2"], "--prompt", "Hi", "--max-tokens", "5",
                 "--seed", "4"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["node"] == node.pubkey and answer["mode"] == "llm"
    assert len(answer["tokens"]) == 5 and answer["seed"] == 4
    assert main([*common, "--model", "00" * 32, "--prompt", "Hi"]) == 2
    assert "refused the job" in capsys.readouterr().err
