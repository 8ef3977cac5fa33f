"""Keystores (EIP-2335 style), the signing journal, and the keys/config commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from assay.cli import main
from protocol.config import REDACTED, ConfigError, NodeConfig, effective, load
from protocol.keys import SigningKey
from protocol.keystore import (
    KeystoreError,
    SigningJournal,
    decrypt,
    decrypt_secret,
    encrypt,
    normalise_password,
    read_keystore,
    write_keystore,
)

FAST_N = 2**10

# EIP-2335's scrypt test vector (password "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑")
EIP2335_PASSWORD = "\U0001d531\U0001d522\U0001d530\U0001d531\U0001d52d\U0001d51e\U0001d530" \
    "\U0001d530\U0001d534\U0001d52c\U0001d52f\U0001d521\U0001f511"
EIP2335_SCRYPT = {
    "crypto": {
        "kdf": {"function": "scrypt", "message": "", "params": {
            "dklen": 32, "n": 262144, "p": 1, "r": 8,
            "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"}},
        "checksum": {"function": "sha256", "params": {},
                     "message": "d2217fe5f3e9a1e34581ef8a78f7c9928e436d36dacc5e846690a5581e8ea484"},
        "cipher": {"function": "aes-128-ctr", "params": {"iv": "264daa3f303d7259501c93d997d84fe6"},
                   "message": "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f"},
    },
    "version": 4,
}


def test_eip2335_scrypt_vector_decrypts_to_its_secret() -> None:
    secret = decrypt_secret(EIP2335_SCRYPT, EIP2335_PASSWORD)
    assert secret.hex() == "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def test_round_trip_wrong_password_and_tampering() -> None:
    key = SigningKey.generate()
    keystore = encrypt(key, "correct horse", "test", n=FAST_N)
    assert decrypt(keystore, "correct horse").public == key.public
    with pytest.raises(KeystoreError, match="wrong password"):
        decrypt(keystore, "wrong horse")
    tampered = json.loads(json.dumps(keystore))
    tampered["crypto"]["cipher"]["message"] = "00" * 32
    with pytest.raises(KeystoreError, match="wrong password"):
        decrypt(tampered, "correct horse")
    swapped = {**keystore, "pubkey": SigningKey.generate().public.hex()}
    with pytest.raises(KeystoreError, match="does not match"):
        decrypt(swapped, "correct horse")
    with pytest.raises(KeystoreError, match="version"):
        decrypt({**keystore, "version": 3}, "correct horse")


def test_a_keystore_asking_for_a_huge_scrypt_cost_is_refused_before_any_work() -> None:
    """An attacker's keystore file with n = 2^30 would take a terabyte to open."""
    key = SigningKey.generate()
    keystore = encrypt(key, "pw", n=FAST_N)

    def with_params(**params: int) -> dict[str, object]:
        changed = json.loads(json.dumps(keystore))
        changed["crypto"]["kdf"]["params"].update(params)
        return changed

    for params, named in (({"n": 2**30}, r"n = 2\^30"), ({"r": 64}, "r = 64"),
                          ({"p": 1000}, "p = 1000"), ({"n": 3}, "not a power of two")):
        with pytest.raises(KeystoreError, match=named):
            decrypt(with_params(**params), "pw")
    # within the bounds, or forced, a keystore opens as before
    assert decrypt(keystore, "pw").public == key.public
    forced = encrypt(key, "pw", n=FAST_N)
    forced["crypto"]["kdf"]["params"]["p"] = 17  # beyond the bound, cheap at n = 2^10
    with pytest.raises(KeystoreError, match="p = 17"):
        decrypt(forced, "pw")
    with pytest.raises(KeystoreError, match="wrong password"):  # forced: scrypt runs
        decrypt(forced, "pw", force=True)


def test_password_normalisation_drops_control_characters() -> None:
    assert normalise_password("a\x00b\x7fc\x9fd") == b"abcd"
    assert normalise_password("\u212b") == normalise_password("A\u030a")  # NFKD


def test_keystore_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_keystore(path, encrypt(SigningKey.generate(), "pw", n=FAST_N))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        write_keystore(path, encrypt(SigningKey.generate(), "pw", n=FAST_N))
    assert read_keystore(path)["version"] == 4


def test_signing_journal_keeps_the_first_message_across_reopen(tmp_path: Path) -> None:
    journal = SigningJournal(tmp_path / "j.sqlite")
    job = b"\x01" * 32
    assert journal.record("audit", job, b"first") == b"first"
    journal.close()
    again = SigningJournal(tmp_path / "j.sqlite")
    assert again.record("audit", job, b"second") == b"first"
    assert again.record("vote", job, b"vote") == b"vote"
    assert again.count("audit") == 1


def test_signing_journal_keeps_the_newest_rows_of_a_kind_only(tmp_path: Path) -> None:
    journal = SigningJournal(tmp_path / "j.sqlite")
    jobs = [bytes([i]) * 32 for i in range(6)]
    for job in jobs:
        journal.record("output", job, b"out" + job[:1])
        journal.record("audit", job, b"signed")
    journal.record("output", jobs[0], b"again")  # kept once, where it was first kept
    assert journal.keep_newest("output", 2) == 4
    assert [journal.get("output", j) is not None for j in jobs] == [False] * 4 + [True] * 2
    assert journal.count("audit") == 6  # another kind is untouched
    with pytest.raises(ValueError, match="must not be negative"):
        journal.keep_newest("output", -1)
    assert journal.count("output") == 2  # a refused call changes nothing
    assert journal.keep_newest("output", 0) == 2 and journal.count("output") == 0


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    fast = ["--scrypt-n", str(FAST_N), "--password-file", str(pw)]
    code, out, _ = run(["keys", "new", "--out", str(tmp_path / "a.json"), *fast], capsys)
    assert code == 0 and "peer 12D3KooW" in out
    pubkey = out.split("pubkey ")[1].split()[0]
    code, out, _ = run(["keys", "list", str(tmp_path)], capsys)
    assert code == 0 and pubkey in out
    code, _, _ = run(["keys", "export", str(tmp_path / "a.json"), "--out",
                      str(tmp_path / "seed"), "--password-file", str(pw)], capsys)
    assert code == 0 and stat.S_IMODE((tmp_path / "seed").stat().st_mode) == 0o600
    code, out, _ = run(["keys", "import", str(tmp_path / "seed"), "--out",
                        str(tmp_path / "b.json"), *fast], capsys)
    assert code == 0 and pubkey in out
    code, _, err = run(["keys", "new", "--out", str(tmp_path / "a.json"), *fast], capsys)
    assert code == 2 and err.startswith("assay: error:") and "refusing to overwrite" in err
    pw.write_text("other\n")
    code, _, err = run(["keys", "export", str(tmp_path / "a.json"), "--out",
                        str(tmp_path / "seed2"), "--password-file", str(pw)], capsys)
    assert code == 2 and "wrong password" in err


def test_config_precedence_flag_over_environment_over_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nhttp_port = 8001\nfee = 50\nkeystore = "keys/n.json"\n'
                    'api_key = "s3cret"\nbootstrap = ["/ip4/127.0.0.1/tcp/1"]\n')
    env = {"ASSAY_HTTP_PORT": "8002", "ASSAY_METRICS": "true", "ASSAY_BOOTSTRAP": "a,b"}
    config = load(NodeConfig, path, {"http_port": "8003"}, env)
    assert config.http_port == 8003  # flag beats environment
    assert config.metrics is True and config.bootstrap == ["a", "b"]  # environment beats file
    assert config.fee == 50  # file beats default
    assert config.keystore == str(tmp_path / "keys" / "n.json")  # relative to the file
    assert config.metrics_host == "127.0.0.1" and NodeConfig().metrics is False
    assert effective(config)["api_key"] == REDACTED


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[node]\nhttp_prot = 1\n", {}, "unknown setting [node].http_prot"),
        ("[node]\nhttp_port = \"x\"\n", {}, "must be an integer"),
        ("[node]\n", {"ASSAY_METRICS": "maybe"}, "ASSAY_METRICS must be true or false"),
        ("[validator]\n", {}, "has no [node] table"),
        ("[node\n", {}, "not valid TOML"),
    ],
)
def test_config_errors_name_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(NodeConfig, path, None, env)


def test_config_show_redacts_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\napi_key = "s3cret"\n')
    monkeypatch.setenv("ASSAY_HTTP_PORT", "8111")
    code, out, _ = run(["config", "show", "--config", str(path)], capsys)
    assert code == 0 and "s3cret" not in out and 'api_key = "<redacted>"' in out
    assert "http_port = 8111" in out
    code, _, err = run(["config", "show"], capsys)
    assert code == 2 and "--config" in err


def test_the_deploy_configs_load_and_keep_metrics_off_the_exporter_range() -> None:
    from protocol.config import LedgerConfig, ValidatorConfig

    root = Path(__file__).resolve().parents[1] / "deploy"
    for cls, name in ((NodeConfig, "node.toml"), (ValidatorConfig, "validator.toml"),
                      (LedgerConfig, "ledger.toml")):
        config = load(cls, root / name, {}, {})
        assert not 9100 <= config.metrics_port <= 9999, name
        assert not 9100 <= cls().metrics_port <= 9999, name
