"""Separate OS processes on loopback: a ledger, nodes and validators started by ``assay devnet``.

All slow: each process imports torch and libp2p. Every process is started in
its own session and killed in the fixture's ``finally``, pass or fail.

The devnet serves its zk model too (``zk-mlp``, real EZKL keys made by
``assay zk setup --devnet-srs`` in ``create``): its jobs are proved by the
node processes and every one is attested VALID by a validator process,
sampled or not; a proof replayed by the cheater's key for another input is
slashed on the evidence. The zk tests run first, while the cheater is still
bonded. The test process reads the ledger's log with the zk proof checker
installed over the devnet's zk store, as ``assay ledger verify --zk-store``
does, since the log then holds INVALID_PROOF evidence to re-check.
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import trio

from assay.commands import devnet
from assay.commands.ledger import proof_checker
from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal, load_key
from protocol.messages import Commitment, JobRequest, Verdict
from protocol.net.host import PeerHost
from protocol.net.ledger_client import LedgerClient
from protocol.sampling import sampled
from prover import zoo
from prover.node import tensor_hash
from prover.zk import SMALL_MLP_CONFIG, ZkProof
from slashing import Ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    network = devnet.create(tmp_path_factory.mktemp("devnet") / "net", nodes=3, validators=2,
                            cheaters=1, sample_ppm=500_000, round_seconds=1.0)
    try:
        devnet.up(network, timeout=150)
        with proof_checker(Path(network.directory) / devnet.ZK_STORE):
            yield network
    finally:
        devnet.down(network)


def client(member: devnet.Member, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{member.http_port}/v1", api_key="devnet",
                         max_retries=0, timeout=timeout)


def ledger_query(net: devnet.Devnet, op: str, **fields: Any) -> dict[str, Any]:
    return ledger_calls(net, [(op, fields)])[0]


def ledger_calls(net: devnet.Devnet, calls: list[tuple[str, dict[str, Any]]]
                 ) -> list[dict[str, Any]]:
    """Several ledger queries over one connection."""
    address = net.member("ledger").address

    async def main() -> list[dict[str, Any]]:
        host = PeerHost(SigningKey.generate(), "/ip4/127.0.0.1/tcp/0", [address])
        async with host.running():
            ledger = LedgerClient(host, address)
            with trio.fail_after(20):
                while True:
                    try:
                        return [await ledger.call(op, **fields) for op, fields in calls]
                    except Exception:  # not connected yet, or the ledger is restarting
                        await trio.sleep(0.2)

    return trio.run(main)


def zk_infer(member: devnet.Member, index: int) -> tuple[dict[str, Any], Commitment]:
    """A job of the devnet's zk model through the node's HTTP ``/v1/infer``."""
    x = Tensor.from_torch(zoo.example_input("mlp", SMALL_MLP_CONFIG, 500 + index))
    body = json.dumps({"model": devnet.ZK_MODEL, "input": {
        "dtype": x.dtype, "shape": list(x.shape), "data": base64.b64encode(x.data).decode(),
    }}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{member.http_port}/v1/infer", body,
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    commitment = Commitment.decode(base64.b64decode(answer["assay"]["commitment"]))
    return answer, commitment


def test_zk_jobs_are_proved_and_every_one_is_attested_valid(net: devnet.Devnet) -> None:
    """Every zk job is checked, the ones the draw did not sample included."""
    status = ledger_query(net, "status")
    rate = int(status["sample_ppm"])  # type: ignore[call-overload]
    jobs: list[tuple[Commitment, bool]] = []
    honest = [net.member("node-0"), net.member("node-1")]
    while len(jobs) < 4 or all(drawn for _, drawn in jobs):
        assert len(jobs) < 16, "the draw sampled 16 jobs in a row at p = 0.5"
        answer, commitment = zk_infer(honest[len(jobs) % 2], len(jobs))
        assert answer["assay"]["mode"] == "zk" and commitment.mode == "zk"
        assert commitment.node == bytes.fromhex(honest[len(jobs) % 2].pubkey)
        ZkProof.decode(commitment.aux)  # the proof rides in the commitment
        deadline = time.monotonic() + 30
        while True:
            (job,) = ledger_calls(net, [("job", {"job_id": commitment.job_id})])
            (beacon,) = ledger_calls(net, [("beacon", {"round": job["sample_round"]})])
            if beacon["found"]:
                break
            assert time.monotonic() < deadline, "the job's sample round was not revealed"
            time.sleep(0.5)
        assert job["zk"]
        jobs.append((commitment, sampled(beacon["randomness"], commitment.job_id,
                                         commitment.content_id, rate)))
    validators = {bytes.fromhex(m.pubkey) for m in net.by_role("validator")}
    deadline = time.monotonic() + 60
    while True:
        recorded = ledger_calls(net, [("job", {"job_id": c.job_id}) for c, _ in jobs])
        if all(r["attested_by"] for r in recorded):
            break
        assert time.monotonic() < deadline, f"zk jobs not attested: {recorded}"
        time.sleep(0.5)
    for r in recorded:
        assert len(r["attested_by"]) == 1 and set(r["attested_by"]) <= validators
    with Ledger.open(Path(net.directory) / "ledger.sqlite") as ledger:
        for commitment, _ in jobs:
            attestations = ledger.state.jobs[commitment.job_id].attestations
            assert [verdict for _, verdict in attestations] == [Verdict.VALID]


def test_a_replayed_proof_is_slashed_on_the_evidence(net: devnet.Devnet) -> None:
    """The cheater's key serves a job with another job's proof; a validator process accuses it
    (INVALID_PROOF), the ledger process re-checks the proof and slashes, with no committee."""
    _, honest = zk_infer(net.member("node-0"), 100)
    cheater = net.member("node-2")
    keys = Path(net.directory) / "keys"
    node_key = load_key(keys / "node-2.json", str(keys / "node-2.pass"))
    client_key = load_key(keys / "node-2-client.json", str(keys / "node-2-client.pass"))
    assert devnet.stop(cheater, signal.SIGTERM, grace=40) == 0  # the forger answers as node-2
    (status,) = ledger_calls(net, [("status", {})])
    x = Tensor.from_torch(zoo.example_input("mlp", SMALL_MLP_CONFIG, 999))
    request = JobRequest(model_id=honest.model_id, input=x, client=client_key.public.raw,
                         node=node_key.public.raw, nonce=time.time_ns(),
                         fee=int(status["reward"]) + int(status["verification_fee"]),
                         expiry_round=int(status["round"]) + 1_000,
                         chain_id=status["chain_id"],
                         ).signed(client_key)
    output = ZkProof.decode(honest.aux).output_tensor()
    forged = Commitment(job_id=request.job_id, model_id=honest.model_id,
                        input_hash=tensor_hash(x), output_hash=tensor_hash(output),
                        node=node_key.public.raw, chain_id=request.chain_id, mode="zk",
                        aux=honest.aux).signed(node_key)
    ledger_address = net.member("ledger").address
    peers = [ledger_address, *(m.address for m in net.by_role("validator"))]

    async def forge() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        host = PeerHost(node_key, "/ip4/127.0.0.1/tcp/0", peers)
        async with host.running():
            ledger = LedgerClient(host, ledger_address)
            with trio.fail_after(20):
                while len(host.connected()) < len(peers):
                    await trio.sleep(0.1)
            before = await ledger.call("account", account=node_key.public.raw)
            await ledger.call("record_job", request=request.encode(),
                              commitment=forged.encode())
            with trio.fail_after(60):
                while (job := await ledger.call("job", job_id=request.job_id))["status"] \
                        == "pending":
                    await trio.sleep(0.3)
            after = await ledger.call("account", account=node_key.public.raw)
            return before, job, after

    try:
        before, job, after = trio.run(forge)
    finally:
        devnet.start(net, cheater)
    assert job["status"] == "refunded" and job["zk"] and not job["open_dispute"]
    assert after["node_stake"] < before["node_stake"]
    sent = []
    for member in net.by_role("validator"):
        journal = SigningJournal(Path(net.directory) / "data" / member.name / "journal.sqlite")
        kept = journal.get("audit", request.job_id)
        journal.close()
        if kept is not None:
            sent.append(kept[1].split(b"\n")[0])
    assert sent == [b"accuse_invalid_proof"]  # one validator checked it, and accused
    with Ledger.open(Path(net.directory) / "ledger.sqlite") as ledger:  # replay re-checks it
        assert ledger.state.counters.invalid_proofs == 1
    devnet.wait_healthy(net, [cheater], timeout=90)


def stake(net: devnet.Devnet, name: str) -> tuple[int, bool]:
    account = ledger_query(net, "account", account=bytes.fromhex(net.member(name).pubkey))
    return int(account["node_stake"]), bool(account["node_slashed_out"])  # type: ignore[arg-type]


def test_openai_client_gets_completions_and_the_cheater_is_slashed(net: devnet.Devnet) -> None:
    honest = net.member("node-0")
    api = client(honest)
    assert {m.id for m in api.models.list().data} == {"gpt2", "mlp", "embed", devnet.ZK_MODEL}
    embedded = api.embeddings.create(model="embed", input=["a sentence", "another one"])
    assert [len(d.embedding) for d in embedded.data] == [64, 64]
    assert all((d.model_extra or {})["assay"]["mode"] == "tensor" for d in embedded.data)
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

    def killed_mid_job(delay: float) -> list[BaseException]:
        """Send a long job, SIGKILL the node ``delay`` s in; what the client raised."""
        errors: list[BaseException] = []

        def long_job() -> None:
            try:
                client(victim).completions.create(model="gpt2", prompt="x" * 500,
                                                  max_tokens=256, seed=1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=long_job)
        thread.start()
        time.sleep(delay)
        devnet.stop(victim, signal.SIGKILL, grace=5)
        thread.join(30)
        assert not thread.is_alive(), "the client still waits 30 s after its node was killed"
        return errors

    # on a fast machine the job can finish before the kill lands (a full slow run once
    # saw no error at 0.3 s); then the node is started again and killed sooner
    for delay in (0.3, 0.1, 0.02):
        errors = killed_mid_job(delay)
        if errors:
            break
        devnet.start(net, victim)
        devnet.wait_healthy(net, [victim], timeout=90)
    assert errors, "every job finished before its kill landed"
    assert isinstance(errors[0], openai.APIConnectionError), errors[0]
    # the ledger's log still verifies (a consistent copy: the ledger appends a round a second,
    # and a replay that outlasts one would race it), and the node comes back and serves again
    copy = Path(net.directory) / "ledger-copy.sqlite"
    live, snapshot = sqlite3.connect(Path(net.directory) / "ledger.sqlite"), sqlite3.connect(copy)
    live.backup(snapshot)
    live.close()
    snapshot.close()
    with Ledger.open(copy) as ledger:
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
    from protocol.keystore import SigningJournal

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
    common = ["infer", "--node", node.address, "--ledger", net.member("ledger").address,
              "--keystore", str(keys / "node-1-client.json"),
              "--password-file", str(keys / "node-1-client.pass"), "--json"]
    assert main([*common, "--model", net.models["gpt2"], "--prompt", "Hi", "--max-tokens", "5",
                 "--seed", "4"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["node"] == node.pubkey and answer["mode"] == "llm"
    assert len(answer["tokens"]) == 5 and answer["seed"] == 4
    assert main([*common, "--model", "00" * 32, "--prompt", "Hi"]) == 2
    assert "refused the job" in capsys.readouterr().err


def test_a_new_operator_funds_a_key_from_the_faucet_and_reads_its_stake(
    net: devnet.Devnet, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    from assay.cli import main
    from protocol.keystore import encrypt, write_keystore

    key = SigningKey.generate()
    write_keystore(tmp_path / "new.json", encrypt(key, "pw", n=2**14))
    (tmp_path / "new.pass").write_text("pw\n")
    assert main(["devnet", "fund", str(tmp_path / "new.json"), "30000",
                 "--dir", net.directory]) == 0
    assert f"funded {key.public.hex()} with 30000" in capsys.readouterr().out
    assert ledger_query(net, "account", account=key.public.raw)["balance"] == 30_000
    assert main(["devnet", "fund", "00" * 32, "10", "--dir", net.directory]) == 0
    assert main(["devnet", "fund", "not a key", "10", "--dir", net.directory]) == 2
    capsys.readouterr()
    assert main(["stake", "status", "--keystore", str(tmp_path / "new.json"), "--password-file",
                 str(tmp_path / "new.pass"), "--ledger", net.member("ledger").address,
                 "--role", "node"]) == 0
    assert "balance 30000; node stake 0" in capsys.readouterr().out
    node = net.member("node-0")
    assert main(["stake", "status", "--config", str(Path(net.directory) / node.config)]) == 0
    assert f"node stake {devnet.STAKE} (active" in capsys.readouterr().out
