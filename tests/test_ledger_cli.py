"""``assay econ``, ``assay ledger`` and ``assay signer``: output, exit codes, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.cli import main
from assay.commands import econ
from protocol.keys import SigningKey
from protocol.messages import Commitment
from protocol.sampling import PPM
from prover.signer_protection import SignerProtection
from slashing import Ledger, LedgerParams
from slashing.workload import Workload, events

WORKLOAD = Workload(jobs=60, jobs_per_round=10, seed=4)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- econ ------------------------------------------------------------------------------------------


def test_econ_defaults_are_the_ledger_defaults() -> None:
    d = LedgerParams.default()
    ours = (econ.DEFAULT_REWARD, econ.DEFAULT_COMPUTE_COST, econ.DEFAULT_SAMPLE_PPM,
            econ.DEFAULT_COLLUSION_PPM, econ.DEFAULT_SLASH, econ.DEFAULT_COMMITTEE_SIZE,
            econ.DEFAULT_LAZY_SLASH)
    theirs = (d.reward, d.compute_cost, d.sample_ppm, d.collusion_ppm, d.fraud_slash,
              d.committee_size, d.lazy_validator_slash)
    assert ours == theirs


def test_econ_for_the_demo_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    from assay.demo import demo_params

    p = demo_params(200_000)
    code, out, _ = run(["econ", "-R", str(p.reward), "-C", str(p.compute_cost),
                        "-p", str(p.sample_ppm / PPM), "-r", str(p.collusion_ppm / PPM),
                        "-S", str(p.fraud_slash), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["violations"] == []
    assert report["conditions"]["posp"]["min_slash"] == 178
    assert report["conditions"]["fabrication"]["min_slash"] == 400
    assert report["min_safe_slash"] == 400
    assert report["detection"][0]["q=1"] == pytest.approx(0.2 * 0.9)
    code, text, _ = run(["econ", "-p", "0.2"], capsys)
    assert code == 0 and "p(1-r)(R+S) > C" in text and "S >= R(1-p)/p" in text


def test_econ_prices_throughput_times_detection_latency(
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The stake a node needs for its throughput: p·S·T·D, and the in-flight limit it gets."""
    code, out, _ = run(["econ", "--json"], capsys)
    risk = json.loads(out)["stake_at_risk"]
    assert code == 0 and risk["holds"] and risk["detection_rounds"] == 6
    assert risk["in_flight_limit"] == 10_000 * 1_000_000 // (50_000 * 5_000) == 40
    assert risk["stake_for_jobs_per_round"]["100"] == 150_000  # 0.05 * 5000 * 100 * 6
    code, out, _ = run(["econ", "-p", "0.5", "--stake", "10000"], capsys)
    assert code == 1 and "UNSAFE: stake at risk fails" in out


def test_econ_names_the_broken_condition_with_its_numbers(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["econ", "-p", "0.05", "-C", "300"], capsys)
    assert code == 1
    assert "UNSAFE: PoSP condition p(1-r)(R+S) > C fails" in out and "need slash >= 6567" in out
    code, out, _ = run(["econ", "-p", "0.05", "-C", "1", "-S", "1000"], capsys)
    assert code == 1 and "fabrication condition S >= R(1-p)/p fails" in out
    code, _, err = run(["econ", "-p", "0"], capsys)
    assert code == 2 and err.startswith("assay: error: p must be above 0")


# -- ledger ----------------------------------------------------------------------------------------


@pytest.fixture()
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        ledger.append_batch(list(events(WORKLOAD)))
    return path


def test_ledger_verify_export_import(ledger_file: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["ledger", "verify", "--ledger", str(ledger_file)], capsys)
    assert code == 0 and "events verified from genesis" in out
    dump = tmp_path / "log.jsonl"
    code, _, err = run(["ledger", "export", "--ledger", str(ledger_file), "--out", str(dump)],
                       capsys)
    assert code == 0 and "exported" in err
    copy = tmp_path / "copy.sqlite"
    code, out, _ = run(["ledger", "import", str(dump), "--ledger", str(copy)], capsys)
    assert code == 0 and "imported" in out
    with Ledger.open(ledger_file) as a, Ledger.open(copy) as b:
        assert a.state_hash() == b.state_hash() and a.head_hash == b.head_hash
    code, _, err = run(["ledger", "import", str(dump), "--ledger", str(copy)], capsys)
    assert code == 2 and "exists" in err
    lines = dump.read_text().splitlines()
    dump.write_text("\n".join([*lines[:3], lines[4], lines[3], *lines[5:]]) + "\n")
    broken = tmp_path / "broken.sqlite"
    code, _, err = run(["ledger", "import", str(dump), "--ledger", str(broken)], capsys)
    assert code == 2 and "nothing was imported" in err and not broken.exists()


def test_ledger_show_and_history(ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = WORKLOAD.key("node", 0).public.raw.hex()
    code, out, _ = run(["ledger", "show", node[:10], "--ledger", str(ledger_file), "--json"],
                       capsys)
    shown = json.loads(out)
    assert code == 0 and shown["account"] == node and shown["node"]["amount"] == 100_000
    code, out, _ = run(["ledger", "show", node, "--ledger", str(ledger_file)], capsys)
    assert code == 0 and "100000 bonded, active" in out
    code, out, _ = run(["ledger", "history", node, "--ledger", str(ledger_file)], capsys)
    assert code == 0 and "record_job" in out and "bond" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ledger", "show", "zz"], "is not hex"),
        (["ledger", "show", "abc"], "shorter than 8 hex digits"),
        (["ledger", "show", "00000000"], "no account starts with '00000000'"),
        (["ledger", "history", "0" * 64], "no events touch"),
    ],
)
def test_ledger_refusals(ledger_file: Path, capsys: pytest.CaptureFixture[str],
                         args: list[str], message: str) -> None:
    code, out, err = run([*args, "--ledger", str(ledger_file)], capsys)
    if message == "no events touch":
        assert code == 0 and message in out
    else:
        assert code == 2 and err.startswith("assay: error:") and message in err


def test_ledger_commands_refuse_a_missing_or_corrupt_file(
    tmp_path: Path, ledger_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["ledger", "verify", "--ledger", str(tmp_path / "none.db")], capsys)
    assert code == 2 and "no ledger at" in err
    import sqlite3

    db = sqlite3.connect(ledger_file)
    db.execute("UPDATE events SET event = X'80' WHERE seq = 3")
    db.commit()
    db.close()
    code, _, err = run(["ledger", "verify", "--ledger", str(ledger_file)], capsys)
    assert code == 2 and "row seq 3: hash does not match" in err


# -- signer ----------------------------------------------------------------------------------------


def test_signer_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = SigningKey.derive("cli/node")
    commitment = Commitment(job_id=bytes(32), model_id=bytes(32), input_hash=bytes(32),
                            output_hash=bytes(32), node=key.public.raw, chain_id=bytes(32))
    with SignerProtection.open(tmp_path / "a.sqlite") as protection:
        protection.approve(commitment)
    dump = tmp_path / "protection.json"
    code, _, _ = run(["signer", "export", "--db", str(tmp_path / "a.sqlite"), "--out", str(dump)],
                     capsys)
    assert code == 0
    code, out, _ = run(["signer", "import", str(dump), "--db", str(tmp_path / "b.sqlite")],
                       capsys)
    assert code == 0 and "imported 1 signed commitments" in out
    dump.write_text("{not json")
    code, _, err = run(["signer", "import", str(dump), "--db", str(tmp_path / "b.sqlite")],
                       capsys)
    assert code == 2 and "is not JSON" in err
