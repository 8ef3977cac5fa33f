"""Models as operators hold them: save_pretrained checkpoints of real architectures, GGUF files.

Every checkpoint here is built in-process (:mod:`tests.checkpoints`): random weights in the
real architecture's code, a real byte-level BPE tokenizer with a chat template. Nothing
downloads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from assay.cli import main
from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest, Verdict
from prover import gguf, model_store
from prover.llm.commit import package
from prover.llm.generate import generate
from prover.llm.job import DEFAULT_CALIBRATION, LLMJob
from prover.llm.model import LLM, GenerationError, load_llm
from prover.llm.prompts import PromptError, chat_prompt, check_context, completion_prompts
from prover.llm.sampler import SamplingParams
from prover.node import load_registered_llms, tensor_hash
from prover.registry import ModelRegistry, ModelRegistryError
from tests import checkpoints
from verifier.llm import verify_generation

NODE = SigningKey.derive("test/llm-models/node")
CHAIN = b"\x0c" * 32
"""A stand-in chain id: these jobs are judged here, never recorded on a ledger."""
CLIENT = SigningKey.derive("test/llm-models/client")
N_NEW = 24
CHAT = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Say the word café"}]}]


def judge(llm: LLM, prompt: torch.Tensor, job: LLMJob, tokens: torch.Tensor, aux: bytes
          ) -> Verdict:
    request = JobRequest(model_id=bytes(32), input=Tensor.from_torch(prompt[None, :]),
                         client=CLIENT.public.raw, node=NODE.public.raw, nonce=1, fee=1,
                         expiry_round=10, chain_id=CHAIN,
                         params=tuple(job.to_params().items())).signed(CLIENT)
    output = Tensor.from_torch(tokens[None, :].contiguous())
    commitment = Commitment(job_id=request.job_id, model_id=bytes(32),
                            input_hash=tensor_hash(request.input), output_hash=tensor_hash(output),
                            node=NODE.public.raw, chain_id=CHAIN, mode="llm",
                            aux=aux).signed(NODE)
    return verify_generation(request, commitment, output, llm, DEFAULT_CALIBRATION).verdict


@pytest.mark.parametrize("arch", sorted(checkpoints.ARCHITECTURES))
def test_each_architecture_registers_generates_and_verifies(arch: str, tmp_path: Path) -> None:
    """save_pretrained output of each architecture registers as llm by default, chats through
    its own template, and an honest node's batched bfloat16 and float32 jobs are VALID while
    another checkpoint's tokens are FRAUD."""
    directory = tmp_path / arch
    checkpoints.save_checkpoint(directory, arch)
    registry = ModelRegistry(tmp_path / "reg")
    entry = registry.add(directory)
    assert entry.mode == "llm" and model_store.is_causal_lm_kind(entry.kind)
    ((model_id, (llm, _)),) = load_registered_llms(registry).items()
    assert model_id == entry.model_id and llm.tokenizer is not None
    ids = chat_prompt(CHAT, llm.tokenizer)
    text = llm.tokenizer.decode(ids)
    assert "You are terse." in text and "Say the word café" in text
    assert text.rstrip().endswith("assistant")
    prompt = torch.tensor(ids)
    other = LLM(checkpoints.build(arch, seed=7))
    for dtype in ("float32", "bfloat16"):
        jobs = [LLMJob(N_NEW, dtype, SamplingParams(seed=s, temperature_milli=t))
                for s, t in ((1, 0), (2, 1000))]
        short = torch.tensor(ids[:5])
        made = generate(llm, [prompt, short], jobs)  # padded batch of two
        for p, j, g in zip([prompt, short], jobs, made, strict=True):
            aux = package(g, j, DEFAULT_CALIBRATION).aux
            assert judge(llm, p, j, g.tokens, aux) is Verdict.VALID, (arch, dtype)
        fake = generate(other, [prompt], jobs[1:])[0]
        assert judge(llm, prompt, jobs[1], fake.tokens,
                     package(fake, jobs[1], DEFAULT_CALIBRATION).aux) is Verdict.FRAUD


def test_model_id_binds_weights_config_and_tokenizer(tmp_path: Path) -> None:
    a = tmp_path / "a"
    checkpoints.save_checkpoint(a, "qwen2")
    base = model_store.model_id(a)
    tok = json.loads((a / "tokenizer.json").read_text())
    tok["model"]["vocab"]["Ġt"], tok["model"]["vocab"]["he"] = (tok["model"]["vocab"]["he"],
                                                               tok["model"]["vocab"]["Ġt"])
    (a / "tokenizer.json").write_text(json.dumps(tok))
    assert model_store.model_id(a) != base  # stop strings depend on the tokenizer


def test_a_sharded_checkpoint_loads_and_its_shards_are_bound(tmp_path: Path) -> None:
    directory = tmp_path / "sharded"
    module = checkpoints.build("llama")
    module.save_pretrained(directory, safe_serialization=True, max_shard_size="20KB")
    checkpoints.tokenizer().save_pretrained(directory)
    assert not (directory / "model.safetensors").exists()
    shards = sorted(directory.glob("model-*.safetensors"))
    assert len(shards) > 1
    loaded, _ = model_store.load_model(directory)
    theirs = module.state_dict()
    assert all(torch.equal(w, theirs[k]) for k, w in loaded.state_dict().items())
    before = model_store.model_id(directory)
    raw = bytearray(shards[-1].read_bytes())
    raw[-1] ^= 1
    shards[-1].write_bytes(bytes(raw))
    assert model_store.model_id(directory) != before
    shards[0].unlink()
    with pytest.raises(model_store.ModelDirectoryError, match="names shard"):
        model_store.model_id(directory)


def test_a_gguf_file_is_converted_once_and_named_by_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = checkpoints.build("llama", seed=3)
    path = tmp_path / "tiny-llama.gguf"
    checkpoints.write_gguf(path, module)
    registry = str(tmp_path / "reg")
    assert main(["models", "add", str(path), "--registry", registry]) == 0
    assert "mode llm" in capsys.readouterr().out
    (entry,) = ModelRegistry(Path(registry)).list()
    assert entry.name == "tiny-llama" and entry.mode == "llm"
    digest = model_store.file_sha256(path)
    assert entry.model_id == model_store.gguf_model_id(digest)
    assert entry.params["gguf"]["sha256"] == digest.hex()
    loaded, _ = model_store.load_model(entry.path)
    ids = torch.arange(5, 40)[None, :]
    with torch.inference_mode():  # float32 tensors in the file: the same model back
        assert torch.allclose(loaded(ids).logits, module(ids).logits, atol=1e-4)
    llm = load_llm(entry.path, loaded)
    reference = checkpoints.tokenizer()
    text = "the café 😀 ends"
    assert llm.tokenizer is not None
    assert llm.tokenizer.encode(text, False) == reference(text, add_special_tokens=False)[
        "input_ids"]
    assert llm.tokenizer.chat_template == checkpoints.CHATML_TEMPLATE
    assert llm.eos_token_ids == {reference.convert_tokens_to_ids("<|im_end|>")}
    # a second registry reuses nothing but converts the same bytes: the same id
    other = ModelRegistry(tmp_path / "reg2").add(path)
    assert other.model_id == entry.model_id
    assert model_store.weights_sha256(other.path) == model_store.weights_sha256(entry.path)
    # the conversion is checked against its marker: edited weights are refused
    raw = bytearray((other.path / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (other.path / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(model_store.ModelDirectoryError, match="convert the GGUF file again"):
        model_store.model_id(other.path)


# -- bad input: a clear error naming the file or field; nothing registered, nothing left ------


def _refused(registry_root: Path, path: Path, match: str) -> None:
    registry = ModelRegistry(registry_root)
    with pytest.raises(ModelRegistryError, match=match):
        registry.add(path)
    assert registry.list() == []
    converted = registry_root / "converted"
    assert not converted.exists() or list(converted.iterdir()) == []


def test_a_truncated_gguf_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "whole.gguf"
    checkpoints.write_gguf(path, checkpoints.build("llama"))
    raw = path.read_bytes()
    for cut in (3, 200, len(raw) // 2, len(raw) - 8):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(raw[:cut])
        _refused(tmp_path / "reg", bad, f"cut{cut}.gguf")


def test_a_gguf_of_an_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rwkv.gguf"
    checkpoints.write_gguf(path, checkpoints.build("llama"), architecture="rwkv7")
    _refused(tmp_path / "reg", path, "GGUF architecture 'rwkv7' is not supported")
    assert gguf.is_gguf_file(path) and not gguf.is_gguf_file(tmp_path)


def test_unsupported_or_broken_checkpoints_are_refused(tmp_path: Path) -> None:
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    _refused(tmp_path / "reg", t5, "model_type 't5' is not supported")
    no_tok = tmp_path / "no-tokenizer"
    checkpoints.build("qwen2").save_pretrained(no_tok, safe_serialization=True)
    _refused(tmp_path / "reg", no_tok, "has no tokenizer.json")
    wrong = tmp_path / "wrong-shapes"
    checkpoints.save_checkpoint(wrong, "llama")
    config = json.loads((wrong / "config.json").read_text())
    config["hidden_size"] = 64
    (wrong / "config.json").write_text(json.dumps(config))
    _refused(tmp_path / "reg", wrong, "wrong-shapes")
    remote = tmp_path / "remote-code"
    checkpoints.save_checkpoint(remote, "llama")
    config = json.loads((remote / "config.json").read_text())
    config["model_type"] = "my_custom_lm"
    config["auto_map"] = {"AutoModelForCausalLM": "modeling.Custom"}
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "modeling.py").write_text("raise SystemExit('remote code ran')\n")
    _refused(tmp_path / "reg", remote, "model_type 'my_custom_lm' is not supported")


def test_a_chat_template_override_is_used_and_a_broken_one_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "m"
    checkpoints.save_checkpoint(directory, "llama")
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    registry = str(tmp_path / "reg")
    assert main(["models", "add", str(directory), "--chat-template", str(template),
                 "--registry", registry]) == 0
    ((llm, _),) = load_registered_llms(ModelRegistry(Path(registry))).values()
    assert llm.tokenizer is not None
    text = llm.tokenizer.decode(chat_prompt(CHAT[1:], llm.tokenizer, llm.chat_template))
    assert text == "user: Say the word café\nassistant:"
    capsys.readouterr()
    assert main(["models", "add", str(directory), "--chat-template", "no-such-file",
                 "--registry", str(tmp_path / "reg2")]) == 2
    assert "neither a file nor a Jinja template" in capsys.readouterr().err
    assert not (tmp_path / "reg2" / "registry.json").exists()


def test_prompts_outside_the_model_are_refused_naming_the_field(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    checkpoints.save_checkpoint(directory, "gpt2")
    module, _ = model_store.load_model(directory)
    llm = load_llm(directory, module)
    tok = llm.tokenizer
    assert tok is not None
    cases = {
        "prompt[0][2]": [[1, 2, checkpoints.VOCAB]],
        "prompt[1]": ["fine", 3.5],
        "prompt": [],
    }
    for param, value in cases.items():
        with pytest.raises(PromptError) as caught:
            completion_prompts(value, tok)
        assert caught.value.param == param
    assert completion_prompts([[1, 2], "the"], tok) == [[1, 2], tok.encode("the", True)]
    for messages, param in (([{"role": "wizard", "content": "hi"}], "messages[0].role"),
                            ([{"role": "user", "content": [{"type": "image_url"}]}],
                             "messages[0].content[0].type"),
                            ([{"role": "user", "content": "hi", "extra": 1}],
                             "messages[0].extra")):
        with pytest.raises(PromptError) as caught:
            chat_prompt(messages, tok)
        assert caught.value.param == param
    with pytest.raises(PromptError) as caught:
        check_context([1] * 250, 16, llm.max_positions)
    assert caught.value.param == "max_tokens" and "context of 256" in str(caught.value)
    with pytest.raises(PromptError) as caught:
        check_context([1] * 300, 1, llm.max_positions)
    assert caught.value.param == "prompt"
    job = LLMJob(16, "float32", SamplingParams(seed=1))
    with pytest.raises(GenerationError, match="exceeds the model's 256 positions"):
        generate(llm, [torch.ones(250, dtype=torch.int64)], [job])
    with pytest.raises(GenerationError, match=f"0..{checkpoints.VOCAB - 1}"):
        generate(llm, [torch.tensor([1, checkpoints.VOCAB])], [job])
