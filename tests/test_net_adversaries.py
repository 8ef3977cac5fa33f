"""Attacks on the running services, each performed on a real ledger service, real libp2p hosts
and real node and validator services on loopback (:func:`tests.net_helpers.network`).

Each test is the attack first, as it was found on the services:

* a node that computes honestly but never serves a sampled job's output to a
  validator, nor posts it when reported: it used to be paid and keep its stake;
  it is now reported, slashed S and its client refunded (while a node that
  refuses validators but posts its output on the ledger when reported is
  audited and paid);
* nodes that answer the job-data request with a map missing ``output``, an
  output of the wrong type or the wrong tensor, garbage bytes or a frame
  announcing gigabytes: the first one used to kill every validator assigned
  (``KeyError: 'request'``); now each is reported and slashed while every
  validator keeps serving;
* an accuser that never gossips its evidence: the committee learns of the
  dispute from the ledger and votes;
* a cheating node that serves its output to its auditor and withholds it from
  the committee (the rules take no report while a dispute is open): the
  committee member takes the accuser's copy, checked against the commitment,
  and the node is slashed;
* a client with no tokens asks for 1,024 tokens: nothing is generated;
* a tombstoned node: ``/health`` 503 naming the tombstone, jobs refused with
  503, the slash logged with its evidence;
* stake unbonded and withdrawn through the ledger service with ``assay stake``;
* an HTTP answer saved to a file verifies with ``assay receipt verify``; one
  with its text changed does not; one the node never recorded is caught and
  can be recorded from the receipt.

All slow: each test starts a network in-process (about 10–40 s on two cores).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from libp2p.custom_types import TProtocol

from protocol import codec
from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.keystore import encrypt, write_keystore
from protocol.messages import Commitment
from protocol.net import wire
from protocol.net.host import PeerHost
from protocol.net.ledger_replies import JobInfo
from prover.service import COMMITMENT, NodeService
from tests.net_helpers import (
    CLIENT,
    FEE,
    NODE_STAKE,
    UNLIMITED,
    Network,
    dial,
    exact_request,
    free_port,
    llm_request,
    network,
    node_address,
)
from verifier.service import ValidatorService

pytestmark = pytest.mark.slow


async def wait_final(net: Network, job_ids: list[bytes], seconds: float = 90) -> list[JobInfo]:
    with trio.fail_after(seconds):
        while True:
            jobs = [await net.client.job(j) for j in job_ids]
            if all(j.found and not j.pending for j in jobs):
                return jobs
            await trio.sleep(0.3)


def run_network(tmp: Path, body: Callable[[Network], Any], **options: Any) -> None:
    """Start a network, run ``body(net)`` in it, stop everything."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async with network(tmp, nursery, **options) as net:
                await body(net)
            nursery.cancel_scope.cancel()
        net.ledger.close()

    trio.run(main)


def metric(service: NodeService | ValidatorService, name: str,
           labels: dict[str, str] | None = None) -> float:
    return service.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def metric_total(service: NodeService | ValidatorService, family: str) -> float:
    return sum(s.value for f in service.metrics.registry.collect() if f.name == family
               for s in f.samples if s.name.endswith("_total"))


# -- withholding -------------------------------------------------------------------------------


class WithholdingNode(NodeService):
    """Computes honestly, then serves no validator the output and ignores reports."""

    async def handle_job_data(self, data: bytes, sender: bytes) -> bytes:
        return wire.error_response("no served job")

    async def answer_reports(self) -> None:
        await trio.sleep_forever()


class LedgerOnlyNode(NodeService):
    """Refuses validators its output, but posts it on the ledger when reported."""

    async def handle_job_data(self, data: bytes, sender: bytes) -> bytes:
        return wire.error_response("no served job")


def test_a_withholding_node_is_reported_slashed_and_its_client_refunded(tmp_path: Path) -> None:
    async def body(net: Network) -> None:
        withholder, poster = net.nodes
        stakes = [(await net.client.account(n.node.node_id)).node.stake for n in net.nodes]
        client_before = (await net.client.account(CLIENT.public.raw)).balance
        llm = [llm_request(withholder, net.model("gpt2"), n) for n in range(2)]
        for request in llm:
            await withholder.execute(request)
        # an exact job of the same node is audited from the ledger's record all the same
        exact = exact_request(withholder, net.model("mlp"), 11)
        await withholder.execute(exact)
        posted = llm_request(poster, net.model("gpt2"), 20)
        await poster.execute(posted)
        jobs = await wait_final(net, [r.job_id for r in (*llm, exact, posted)])
        withheld, audited, served = jobs[:2], jobs[2], jobs[3]
        assert [j.status for j in withheld] == ["refunded", "refunded"]
        after = [(await net.client.account(n.node.node_id)).node.stake for n in net.nodes]
        assert after[0] == stakes[0] - 2 * net.ledger.ledger.state.params.fraud_slash  # type: ignore[union-attr]
        offences = await net.client.offences(withholder.node.node_id)
        assert sorted(o.kind for o in offences) == ["unavailable", "unavailable"]
        assert (await net.client.account(CLIENT.public.raw)).balance == client_before - 2 * FEE
        # the exact job's request came from the ledger: audited VALID although withheld
        assert audited.attested_by
        # the node that posts its output when reported is audited and keeps its stake
        assert served.status == "settled" and served.served and served.attested_by
        assert after[1] == stakes[1] and metric(poster, "assay_served_data_total") == 1
        assert sum(metric(v, "assay_validator_reports_total") for v in net.validators) == 3

    run_network(tmp_path, body, node_classes=(WithholdingNode, LedgerOnlyNode),
                node_settings=UNLIMITED)


# -- malformed job data -----------------------------------------------------------------------


def answering(name: str, reply: bytes) -> type[NodeService]:
    """A node that computes honestly and answers every job-data request with ``reply``."""

    async def handle_job_data(self: NodeService, data: bytes, sender: bytes) -> bytes:
        return reply

    async def answer_reports(self: NodeService) -> None:
        await trio.sleep_forever()

    return type(name, (NodeService,), {"handle_job_data": handle_job_data,
                                       "answer_reports": answer_reports})


class OversizedNode(NodeService):
    """Answers with a frame that announces 2 GiB."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        async def oversized(stream: Any) -> None:
            await wire.read_frame(stream, 4096)
            await stream.write(b"\x7f\xff\xff\xff" + b"x" * 64)
            await stream.close()

        self.host.host.set_stream_handler(TProtocol(wire.PROTOCOL_JOB_DATA), oversized)

    async def answer_reports(self) -> None:
        await trio.sleep_forever()


HOSTILE_REPLIES = {
    "MissingOutput": wire.ok_response(),  # what killed the validators: {"ok": true}
    "MistypedOutput": wire.ok_response(output=7),
    "AnotherOutput": wire.ok_response(output=Tensor("int64", (1, 4), bytes(32))),
    "Garbage": b"\xc1\xc1 not msgpack \xff",
}


def test_malformed_job_data_is_reported_and_slashed_while_every_validator_keeps_running(
    tmp_path: Path,
) -> None:
    hostile = [answering(name, reply) for name, reply in HOSTILE_REPLIES.items()]
    classes = (*hostile, OversizedNode, NodeService)

    async def body(net: Network) -> None:
        *bad, honest = net.nodes
        stakes = [(await net.client.account(n.node.node_id)).node.stake for n in bad]
        requests = [llm_request(node, net.model("gpt2"), 100 + i) for i, node in enumerate(bad)]
        for node, request in zip(bad, requests, strict=True):
            await node.execute(request)
        jobs = await wait_final(net, [r.job_id for r in requests])
        assert [j.status for j in jobs] == ["refunded"] * len(bad)
        slash = net.ledger.ledger.state.params.fraud_slash  # type: ignore[union-attr]
        for node, before in zip(bad, stakes, strict=True):
            assert (await net.client.account(node.node.node_id)).node.stake == before - slash
        # every validator is still up, and audits the next job
        for validator in net.validators:
            assert validator.health()[0], validator.health()[1]
            assert metric_total(validator, "assay_task_errors") == 0
        reasons = {s.labels["reason"] for v in net.validators
                   for f in v.metrics.fetch_failures.collect() for s in f.samples
                   if s.name.endswith("_total")}
        assert {"malformed", "oversized"} <= reasons
        good = llm_request(honest, net.model("gpt2"), 200)
        await honest.execute(good)
        with trio.fail_after(30):
            while not (await net.client.job(good.job_id)).attested_by:
                await trio.sleep(0.3)

    run_network(tmp_path, body, node_classes=classes, node_settings=UNLIMITED)


# -- disputes learnt from the ledger ------------------------------------------------------------


class SilentValidator(ValidatorService):
    """Sends its findings to the ledger and never gossips them."""

    async def _submit(self, op: str, message: bytes, request: bytes = b"") -> None:
        fields = {"attestation": message} if op == "attest" else {"evidence": message}
        with contextlib.suppress(wire.RemoteError):
            await self.ledger.call(op, **fields)


def test_an_accuser_that_never_gossips_still_gets_a_committee_that_votes(tmp_path: Path) -> None:
    async def body(net: Network) -> None:
        cheater = net.nodes[0]
        request = exact_request(cheater, net.model("mlp"), 300)
        stake = (await net.client.account(cheater.node.node_id)).node.stake
        await cheater.execute(request)
        (job,) = await wait_final(net, [request.job_id])
        assert job.status == "refunded"
        state = net.ledger.ledger.state
        (dispute,) = [d for d in state.disputes.values() if d.job_id == request.job_id]
        assert str(dispute.outcome) == "FRAUD" and len(dispute.votes) == 1
        assert (await net.client.account(cheater.node.node_id)).node.stake < stake
        # nobody gossiped: the committee member learnt the dispute from the ledger
        for validator in net.validators:
            assert metric(validator, "assay_gossip_received_total",
                          {"topic": wire.TOPIC_EVIDENCE}) == 0
        assert sum(metric(v, "assay_validator_votes_total") for v in net.validators) == 1

    run_network(tmp_path, body, validator_classes=(SilentValidator, SilentValidator),
                cheaters=(0,), node_settings=UNLIMITED)


class CommitteeWithholdingNode(NodeService):
    """Cheats, serves its output to the auditor the ledger assigned, and to nobody else: the
    rules take no report while the job is disputed, so it hopes its committee cannot judge."""

    async def handle_job_data(self, data: bytes, sender: bytes) -> bytes:
        job = await self.ledger.job(wire.decode_map(data, 4096)["job_id"])
        if sender != job.auditor:
            return wire.error_response("no served job")
        return await super().handle_job_data(data, sender)

    async def answer_reports(self) -> None:
        await trio.sleep_forever()


def test_a_node_that_withholds_from_its_committee_is_judged_on_the_accusers_copy(
    tmp_path: Path,
) -> None:
    async def body(net: Network) -> None:
        cheater = net.nodes[0]
        request = llm_request(cheater, net.model("gpt2"), 400)
        stake = (await net.client.account(cheater.node.node_id)).node.stake
        await cheater.execute(request)
        (job,) = await wait_final(net, [request.job_id])
        assert job.status == "refunded"
        state = net.ledger.ledger.state
        (dispute,) = [d for d in state.disputes.values() if d.job_id == request.job_id]
        assert str(dispute.outcome) == "FRAUD", dispute
        (accuser,) = [v for v in net.validators if v.me in dispute.accusers]
        (member,) = [v for v in net.validators if v.me in dispute.committee]
        assert accuser.journal.get("output", request.job_id) is not None
        assert metric(member, "assay_validator_fetch_failures_total", {"reason": "invalid"}) >= 1
        slash = state.params.fraud_slash  # type: ignore[union-attr]
        assert (await net.client.account(cheater.node.node_id)).node.stake == stake - slash

    run_network(tmp_path, body, node_classes=(CommitteeWithholdingNode,), cheaters=(0,),
                node_settings=UNLIMITED)


# -- pay before compute -------------------------------------------------------------------------


def test_an_unfunded_client_gets_no_tokens_generated(tmp_path: Path) -> None:
    stranger = SigningKey.derive("adversaries/stranger")

    async def body(net: Network) -> None:
        node = net.nodes[0]
        free = llm_request(node, net.model("gpt2"), 1, tokens=1024, key=stranger)
        greedy = llm_request(node, net.model("gpt2"), 2, tokens=1025)
        host = PeerHost(stranger, f"/ip4/127.0.0.1/tcp/{free_port()}")
        async with host.running():
            await dial(host, node_address(node))
            refusals = []
            for request in (free, greedy):
                try:
                    await host.request(node.node.node_id, wire.PROTOCOL_JOB, request.encode(), 60)
                except wire.RemoteError as exc:
                    refusals.append(str(exc))
        assert len(refusals) == 2
        assert "would not record the job" in refusals[0] and "no account" in refusals[0]
        assert "exceeds this node's limit 1024" in refusals[1]
        assert node.journal.count(COMMITMENT) == 0  # nothing was run, nothing was signed
        assert metric(node, "assay_tokens_generated_total") == 0
        assert metric(node, "assay_jobs_refused_unpaid_total") == 1

    run_network(tmp_path, body, validator_classes=(),
                node_settings={**UNLIMITED, "max_new_tokens": 1024})


# -- operator truth ------------------------------------------------------------------------------


def test_a_tombstoned_node_says_so_refuses_jobs_with_503_and_logs_the_evidence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="assay.node")

    async def body(net: Network) -> None:
        node = net.nodes[0]
        request = llm_request(node, net.model("gpt2"), 1)
        _, commitment = await node.execute(request)
        # the node's key signs a second commitment for the job: equivocation, tombstoned
        second = Commitment(**{**commitment.__dict__, "aux": commitment.aux + b"\x00",
                               "signature": b""}).signed(node.node.key)
        await net.client.call("record_job", request=request.encode(),
                              commitment=second.encode())
        with trio.fail_after(20):
            while node.health()[0]:
                await trio.sleep(0.2)
        base = f"http://127.0.0.1:{node.config.http_port}"
        async with httpx.AsyncClient(timeout=30) as http:
            health = await http.get(f"{base}/health")
            job = await http.post(f"{base}/v1/completions",
                                  json={"model": "gpt2", "prompt": "hi", "max_tokens": 2})
        assert health.status_code == 503 and "tombstoned" in health.json()["reason"]
        assert job.status_code == 503 and job.headers["retry-after"]
        assert "tombstoned" in job.json()["error"]["message"]
        assert metric(node, "assay_ready") == 0
        with trio.fail_after(10):
            while not any("equivocation on job" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.2)

    run_network(tmp_path, body, validator_classes=(), node_settings=UNLIMITED)
    (warning,) = [r for r in caplog.records if "slashed as a node" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "tombstoned" in warning.getMessage()


def keystore(tmp: Path, key: SigningKey, name: str) -> tuple[str, str]:
    write_keystore(tmp / f"{name}.json", encrypt(key, "pw", n=2**14))
    (tmp / f"{name}.pass").write_text("pw\n")
    return str(tmp / f"{name}.json"), str(tmp / f"{name}.pass")


def test_stake_unbonds_and_is_withdrawn_through_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from assay.cli import main

    async def cli(*args: str) -> tuple[int, str, str]:
        code = await trio.to_thread.run_sync(main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    async def body(net: Network) -> None:
        node = net.nodes[0]
        path, password = keystore(tmp_path, node.node.key, "node")
        common = ("--keystore", path, "--password-file", password, "--ledger", net.address,
                  "--role", "node")
        code, out, _ = await cli("stake", "status", *common)
        assert code == 0 and f"node stake {NODE_STAKE} (active" in out
        before = (await net.client.account(node.node.node_id)).balance
        code, out, _ = await cli("stake", "unbond", *common)
        assert code == 0 and f"unbonding {NODE_STAKE} as a node" in out
        release = int(out.rsplit("from round ", 1)[1].split()[0])
        code, _, err = await cli("stake", "withdraw", *common)
        assert code == 2 and f"next is released in round {release}" in err
        with trio.fail_after(20):
            while node.health()[0]:
                await trio.sleep(0.2)
        assert "not bonded" in node.health()[1]["reason"]
        with trio.fail_after(30):
            while net.ledger.ledger.state.current_round < release:
                await trio.sleep(0.2)
        code, out, _ = await cli("stake", "withdraw", *common)
        assert code == 0 and f"withdrew {NODE_STAKE}" in out
        assert (await net.client.account(node.node.node_id)).balance == before + NODE_STAKE
        code, out, _ = await cli("stake", "status", *common)
        assert "node stake 0" in out and "unbonding" not in out

    run_network(tmp_path, body, validator_classes=(), round_seconds=0.2, challenge_window=1,
                availability_window=1, audit_window=1, vote_window=1, unbonding_period=16,
                node_settings=UNLIMITED)


# -- receipts -------------------------------------------------------------------------------------


def test_a_saved_http_response_verifies_and_a_changed_one_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from assay.cli import main

    async def verify(path: Path, *flags: str) -> tuple[int, str]:
        code = await trio.to_thread.run_sync(main, ["receipt", "verify", str(path), *flags])
        out, err = capsys.readouterr()
        return code, out + err

    async def body(net: Network) -> None:
        node = net.nodes[0]
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(
                f"http://127.0.0.1:{node.config.http_port}/v1/completions",
                json={"model": "gpt2", "prompt": "Hello", "max_tokens": 6, "seed": 1})
        assert answer.status_code == 200
        saved = tmp_path / "answer.json"
        saved.write_text(answer.text)
        code, out = await verify(saved, "--ledger", net.address)
        assert code == 0 and "recorded on the ledger" in out, out
        changed = json.loads(answer.text)
        changed["choices"][0]["text"] = changed["choices"][0]["text"][::-1] + "?"
        (tmp_path / "changed.json").write_text(json.dumps(changed))
        code, out = await verify(tmp_path / "changed.json", "--ledger", net.address)
        assert code == 1 and "text shown is not the committed tokens' text" in out
        # a job the node answered but never recorded: caught, and recorded from the receipt
        request = llm_request(node, net.model("gpt2"), 77)
        result = await trio.to_thread.run_sync(node.node.handle, request)
        hidden = json.loads(answer.text)
        tokens = [int(t) for t in result.output.to_torch().reshape(-1).tolist()]
        hidden["choices"][0]["text"] = bytes(tokens).decode("utf-8", errors="replace")
        hidden["assay"].update(
            job_id=request.job_id.hex(), commitment_id=result.commitment.content_id.hex(),
            commitment=base64.b64encode(result.commitment.encode()).decode(),
            request=base64.b64encode(request.encode()).decode(),
            output=base64.b64encode(codec.encode(result.output)).decode())
        (tmp_path / "hidden.json").write_text(json.dumps(hidden))
        code, out = await verify(tmp_path / "hidden.json", "--ledger", net.address)
        assert code == 1 and "not recorded on the ledger" in out
        code, out = await verify(tmp_path / "hidden.json", "--ledger", net.address, "--record")
        assert code == 0 and "recorded it from the receipt" in out
        assert (await net.client.job(request.job_id)).found

    run_network(tmp_path, body, validator_classes=(), node_settings=UNLIMITED)
