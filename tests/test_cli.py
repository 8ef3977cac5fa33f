"""Every CLI command: a bad input is one clear line on stderr, exit 2, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.cli import main

PEER = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWBrfz2m7fL3sfEZPi5wsSr1WYdjNeTcJcZwjcCwYpTPK6"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_models_build_add_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = str(tmp_path / "reg")
    code, out, _ = run(["models", "build", "mlp", "--seed", "2", "--out", str(tmp_path / "m")],
                       capsys)
    assert code == 0 and "model id" in out
    code, out, _ = run(["models", "add", str(tmp_path / "m"), "--registry", registry,
                        "--no-suggest"], capsys)
    assert code == 0 and "registered m (mlp, mode tensor)" in out
    assert "assay calibrate m" in out
    code, out, _ = run(["models", "list", "--registry", registry, "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and len(listed) == 1 and listed[0]["mode"] == "tensor"
    code, out, _ = run(["models", "remove", "m", "--registry", registry], capsys)
    assert code == 0 and "removed m" in out
    code, out, _ = run(["models", "list", "--registry", registry, "--json"], capsys)
    assert json.loads(out) == []


def test_a_float_checkpoint_is_refused_as_exact_unless_quantised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "reg"
    run(["models", "build", "cnn", "--seed", "3", "--out", str(tmp_path / "cnn")], capsys)
    code, _, err = run(["models", "add", str(tmp_path / "cnn"), "--registry", str(registry),
                        "--mode", "exact"], capsys)
    assert code == 2 and "computes in float32" in err and "--quantize" in err
    assert not (registry / "registry.json").exists()

    code, out, _ = run(["models", "add", str(tmp_path / "cnn"), "--registry", str(registry),
                        "--quantize", "--name", "digits"], capsys)
    assert code == 0 and "registered digits (cnn-int8, mode exact)" in out
    assert "top-1 agreement with the float model" in out
    entry = json.loads(run(["models", "list", "--registry", str(registry), "--json"],
                           capsys)[1])[0]
    report = entry["params"]["quantization"]
    assert report["inputs"] == 256 and 0.9 <= report["top1_agreement"] <= 1.0
    assert entry["path"].endswith("digits-int8") and entry["kind"] == "cnn-int8"

    code, out, _ = run(["models", "run", "digits", "--example", "4", "--json",
                        "--registry", str(registry)], capsys)
    first = json.loads(out)
    assert code == 0 and first["mode"] == "exact" and len(first["output_hash"]) == 64
    code, out, _ = run(["models", "run", "digits", "--example", "4", "--json", "--threads", "2",
                        "--registry", str(registry)], capsys)
    assert json.loads(out)["output_hash"] == first["output_hash"]


def test_models_run_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = str(tmp_path / "reg")
    run(["models", "build", "mlp-int8", "--out", str(tmp_path / "m")], capsys)
    run(["models", "add", str(tmp_path / "m"), "--registry", registry], capsys)
    (tmp_path / "garbage").write_bytes(b"not a tensor")
    import numpy as np

    np.save(tmp_path / "floats.npy", np.zeros((1, 1, 28, 28), dtype=np.float32))
    for extra, message in [
        (["--input", str(tmp_path / "garbage")], "neither a .npy file nor a canonical tensor"),
        (["--input", str(tmp_path / "floats.npy")], "takes torch.uint8 inputs"),
        (["--input", str(tmp_path / "absent.npy")], "cannot read --input"),
        ([], "exactly one of --input FILE or --example SEED"),
    ]:
        code, _, err = run(["models", "run", "m", "--registry", registry, *extra], capsys)
        assert code == 2 and message in err, (extra, err)


def test_models_add_refuses_bad_directories_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "reg"
    run(["models", "build", "cnn", "--out", str(tmp_path / "good")], capsys)
    run(["models", "add", str(tmp_path / "good"), "--registry", str(registry)], capsys)
    before = (registry / "registry.json").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory, words in [
        (tmp_path / "missing", "missing"),
        (empty, "empty"),
    ]:
        code, _, err = run(["models", "add", str(directory), "--registry", str(registry)], capsys)
        assert code == 2
        assert err.startswith("assay: error:") and str(directory.name) in err, (words, err)
    code, _, err = run(["models", "add", str(tmp_path / "good"), "--registry", str(registry),
                        "--mode", "quantum"], capsys)
    assert code == 2 and "invalid choice: 'quantum'" in err
    assert (registry / "registry.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "-p", "1.5"], "not a probability between 0 and 1"),
        (["demo", "-p", "often"], "not a probability like 0.05"),
        (["demo", "--jobs", "-3"], "must not be negative"),
        (["demo", "--jobs", "many"], "is not an integer"),
        (["demo", "--nodes", "0"], "nodes must be at least 1"),
        (["demo", "--cheaters", "9"], "cheaters must be between 0 and nodes"),
        (["models", "build", "resnet", "--out", "x"], "invalid choice: 'resnet'"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["infer", "--node", "/ip4/127.0.0.1/tcp/1", "--ledger", PEER, "--keystore", "k",
          "--model", "ab",
          "--prompt", "x"], "is not a /p2p/ address"),
        (["infer", "--node", PEER, "--ledger", PEER, "--keystore", "k", "--model", "ab",
          "--prompt", "x"],
         "64 hex digits"),
        (["infer", "--node", "x", "--ledger", PEER, "--keystore", "k", "--model", "ab"],
         "one of the arguments"),
    ],
)
def test_bad_arguments_name_the_problem(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(args, capsys)
    assert code == 2
    assert message in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("assay 0.")
