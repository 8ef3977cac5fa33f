"""The prover's model layer: zoo, model ids, registry and deterministic runtime."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import PreTrainedModel

from protocol.codec import Tensor, encode
from protocol.hashing import sha256
from prover import model_store, zoo
from prover.registry import (
    MODES,
    ModelRegistry,
    ModelRegistryError,
    UnknownModel,
    default_registry_root,
)
from prover.runtime import DeterministicRuntime, JobInputError, input_hash, output_hash
from prover.tensor import TensorModel, run_tensor_jobs

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


@functools.cache
def zoo_model(name: str, seed: int = 0) -> zoo.ZooModel:
    """Built once per test session: building is deterministic, so sharing is safe."""
    return zoo.build(name, seed)


def saved(directory: Path, name: str, seed: int = 0) -> Path:
    m = zoo.build(name, seed)
    model_store.save_model(directory, m.module, m.kind, m.config)
    return directory


def saved_pretrained(directory: Path, name: str, seed: int = 0) -> zoo.ZooModel:
    """A user's checkpoint: transformers' own save_pretrained output."""
    m = zoo.build(name, seed)
    assert isinstance(m.module, PreTrainedModel)
    m.module.save_pretrained(directory, safe_serialization=True)
    return m


# --- zoo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_same_seed_gives_the_same_bytes_and_id(name: str, tmp_path: Path) -> None:
    first = model_store.model_id(saved(tmp_path / "a", name, seed=5))
    second = model_store.model_id(saved(tmp_path / "b", name, seed=5))
    weights_a = (tmp_path / "a" / model_store.WEIGHTS_FILE).read_bytes()
    weights_b = (tmp_path / "b" / model_store.WEIGHTS_FILE).read_bytes()
    assert weights_a == weights_b
    assert first == second


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_other_seed_gives_another_model_of_the_same_architecture(name: str, tmp_path: Path) -> None:
    honest = model_store.model_id(saved(tmp_path / "honest", name, seed=1))
    cheap = model_store.model_id(saved(tmp_path / "cheap", name, seed=2))
    assert honest != cheap

    def architecture(config: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in config.items() if k != "quantization"}  # scales follow weights

    assert architecture(zoo.build(name, 1).config) == architecture(zoo.build(name, 2).config)


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_building_leaves_the_global_rng_alone(name: str) -> None:
    before = torch.random.get_rng_state()
    zoo.build(name, 3)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_unknown_zoo_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'"):
        zoo.build("resnet", 0)


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_example_inputs_are_seeded_and_runnable(name: str) -> None:
    m = zoo_model(name)
    x = m.example_input(11)
    assert torch.equal(x, m.example_input(11))
    if name in zoo.EMBEDDER_KINDS:
        out = run_tensor_jobs(TensorModel(m.module), [x], [bytes(32)])[0].output.to_torch()
        assert out.shape == (1, m.config["hidden_size"])
        return
    out = DeterministicRuntime().run(m.module, x)
    expected = 10 if name in zoo.IMAGE_KINDS + zoo.INTEGER_KINDS else m.config["vocab_size"]
    assert out.dtype == (torch.int32 if name in zoo.INTEGER_KINDS else torch.float32)
    assert out.shape == (1, expected)


# --- model store -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.ZOO_NAMES)
def test_save_load_round_trip_keeps_the_id_and_the_output_bits(name: str, tmp_path: Path) -> None:
    original = zoo.build(name, 9)
    first_id = model_store.save_model(tmp_path / "a", original.module, name, original.config)
    loaded, meta = model_store.load_model(tmp_path / "a")
    again_id = model_store.save_model(tmp_path / "b", loaded, meta.kind, meta.config)
    assert first_id == model_store.model_id(tmp_path / "a") == again_id
    x = original.example_input(4)
    if name in zoo.EMBEDDER_KINDS:
        def run(module: nn.Module) -> Tensor:
            return run_tensor_jobs(TensorModel(module), [x], [bytes(32)])[0].output
        assert run(loaded) == run(original.module)
        return
    runtime = DeterministicRuntime()
    assert output_hash(runtime.run(loaded, x)) == output_hash(runtime.run(original.module, x))


def test_model_id_follows_the_documented_formula(tmp_path: Path) -> None:
    m = zoo_model("mlp")
    model_store.save_model(tmp_path, m.module, m.kind, m.config)
    config = json.dumps(m.config, sort_keys=True, separators=(",", ":"))
    weights = sha256((tmp_path / model_store.WEIGHTS_FILE).read_bytes())
    expected = sha256(encode({"config": config, "kind": "mlp", "weights": weights}))
    assert model_store.model_id(tmp_path) == expected


def test_any_weight_change_gives_a_new_id(tmp_path: Path) -> None:
    m = zoo.build("mlp", 0)
    before = model_store.save_model(tmp_path / "a", m.module, m.kind, m.config)
    w = dict(m.module.named_parameters())["head.weight"]
    with torch.no_grad():
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))  # one ulp
    after = model_store.save_model(tmp_path / "b", m.module, m.kind, m.config)
    assert before != after


def test_any_config_change_gives_a_new_id(tmp_path: Path) -> None:
    m = zoo.build("gpt2", 0)
    before = model_store.save_model(tmp_path, m.module, m.kind, m.config)
    meta_path = tmp_path / model_store.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["config"]["layer_norm_epsilon"] = 1e-6  # a float: carried as canonical JSON text
    meta_path.write_text(json.dumps(meta))
    assert model_store.model_id(tmp_path) != before
    model_store.load_model(tmp_path)  # still a valid model, just another one


def test_save_model_refuses_non_float32_weights(tmp_path: Path) -> None:
    m = zoo.build("mlp", 0)
    with pytest.raises(ValueError, match="float32"):
        model_store.save_model(tmp_path, m.module.to(torch.float64), m.kind, m.config)


@pytest.mark.parametrize("name", zoo.CAUSAL_LM_KINDS)
def test_a_transformers_save_pretrained_directory_loads(name: str, tmp_path: Path) -> None:
    source = saved_pretrained(tmp_path, name, seed=6)
    loaded, meta = model_store.load_model(tmp_path)
    assert (meta.kind, meta.source) == (name, model_store.TRANSFORMERS_CONFIG_FILE)
    assert "transformers_version" not in meta.config
    runtime = DeterministicRuntime()
    x = source.example_input(2)
    assert torch.equal(runtime.run(loaded, x), runtime.run(source.module, x))
    # out of the file's mapping (which left them unaligned, and changed float results on AMD),
    # with tied weights still one tensor
    assert all(p.data_ptr() % 64 == 0 for p in loaded.parameters())
    if source.module.config.tie_word_embeddings:
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


# --- registry --------------------------------------------------------------------------------


def test_registry_add_list_get_remove(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.list() == []
    mlp = registry.add(saved(tmp_path / "mlp", "mlp-int8"), name="digits")
    llama = registry.add(saved(tmp_path / "llama", "llama"), mode="llm", params={"tol": 0.5})
    assert mlp.model_id == model_store.model_id(tmp_path / "mlp")
    assert (mlp.kind, mlp.mode, mlp.name) == ("mlp-int8", "exact", "digits")
    assert (llama.name, llama.params) == ("llama", {"tol": 0.5})

    reopened = ModelRegistry(tmp_path / "registry")
    assert reopened.list() == [mlp, llama]
    assert reopened.get(llama.model_id) == llama
    assert reopened.get(llama.model_id.hex()) == llama

    assert reopened.remove(mlp.model_id) == mlp
    assert ModelRegistry(tmp_path / "registry").list() == [llama]  # params kept across rewrites


def test_a_transformers_gpt2_directory_registers(tmp_path: Path) -> None:
    saved_pretrained(tmp_path / "gpt2", "gpt2", seed=8)
    entry = ModelRegistry(tmp_path / "registry").add(tmp_path / "gpt2", mode="llm")
    assert entry.kind == "gpt2"
    assert entry.model_id == model_store.model_id(tmp_path / "gpt2")
    assert ModelRegistry(tmp_path / "registry").get(entry.model_id).path == tmp_path / "gpt2"


def test_every_mode_name_is_accepted(tmp_path: Path) -> None:
    kinds = {"exact": "mlp-int8", "llm": "gpt2", "tensor": "gpt2", "zk": "mlp"}
    assert set(kinds) == set(MODES)
    for mode in MODES:
        registry = ModelRegistry(tmp_path / mode)
        assert registry.add(saved(tmp_path / f"m-{mode}", kinds[mode]), mode=mode).mode == mode


@pytest.mark.parametrize(("name", "mode"), [("mlp-int8", "exact"), ("cnn", "tensor"),
                                            ("gpt2", "tensor"), ("bert", "tensor")])
def test_with_no_mode_integer_models_are_exact_and_float_models_tensor(
    name: str, mode: str, tmp_path: Path
) -> None:
    assert ModelRegistry(tmp_path / "r").add(saved(tmp_path / name, name)).mode == mode


def test_default_registry_root_follows_assay_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path))
    assert default_registry_root() == tmp_path / "models"
    monkeypatch.delenv("ASSAY_HOME")
    assert default_registry_root() == Path.home() / ".assay" / "models"


def _missing_weights(d: Path) -> Path:
    (saved(d, "mlp") / model_store.WEIGHTS_FILE).unlink()
    return d


def _corrupt_json(d: Path) -> Path:
    (saved(d, "mlp") / model_store.META_FILE).write_text("{not json")
    return d


def _bad_config(d: Path) -> Path:
    meta_path = saved(d, "mlp") / model_store.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["config"]["n_hidden1"] = -3
    meta_path.write_text(json.dumps(meta))
    return d


def _unsupported_model_type(d: Path) -> Path:
    d.mkdir()
    (d / model_store.TRANSFORMERS_CONFIG_FILE).write_text(json.dumps({"model_type": "t5"}))
    return d


def _weights_of_another_model(d: Path) -> Path:
    saved(d, "mlp")
    shutil.copy(saved(d.with_name("cnn"), "cnn") / model_store.WEIGHTS_FILE, d)
    return d


BAD_DIRECTORIES = {
    "missing directory": (lambda d: d, "does not exist"),
    "missing weights": (_missing_weights, "has no model.safetensors"),
    "corrupt json": (_corrupt_json, "is not readable JSON"),
    "bad config": (_bad_config, "config does not build a mlp model"),
    "unsupported model_type": (_unsupported_model_type, "model_type 't5' is not supported"),
    "weights of another model": (_weights_of_another_model, "does not hold the weights"),
}


@pytest.fixture
def populated(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(saved(tmp_path / "existing", "cnn"), params={"note": "kept"})
    return registry


@pytest.mark.parametrize("case", sorted(BAD_DIRECTORIES))
def test_bad_directories_are_refused_and_leave_the_registry_unchanged(
    case: str, populated: ModelRegistry, tmp_path: Path
) -> None:
    make, message = BAD_DIRECTORIES[case]
    directory = make(tmp_path / "candidate")
    before = populated.path.read_bytes()
    with pytest.raises(ModelRegistryError, match=message):
        populated.add(directory)
    assert populated.path.read_bytes() == before


@pytest.mark.parametrize(
    ("mode", "params", "message"),
    [
        ("fast", None, "unknown mode 'fast'"),
        ("llm", None, "needs a causal LM"),
        ("exact", None, "the exact mode would slash honest nodes"),
        ("tensor", {"tol": float("nan")}, "params must be finite JSON"),
    ],
)
def test_bad_requests_are_refused_and_leave_the_registry_unchanged(
    mode: str,
    params: dict[str, float] | None,
    message: str,
    populated: ModelRegistry,
    tmp_path: Path,
) -> None:
    directory = saved(tmp_path / "candidate", "mlp")
    before = populated.path.read_bytes()
    with pytest.raises(ModelRegistryError, match=message):
        populated.add(directory, mode=mode, params=params)
    assert populated.path.read_bytes() == before


def test_adding_a_model_twice_is_refused(populated: ModelRegistry, tmp_path: Path) -> None:
    before = populated.path.read_bytes()
    with pytest.raises(ModelRegistryError, match="already registered"):
        populated.add(tmp_path / "existing")
    assert populated.path.read_bytes() == before


def test_unknown_model_ids_are_named(populated: ModelRegistry) -> None:
    before = populated.path.read_bytes()
    unknown = bytes(32)
    with pytest.raises(UnknownModel, match=f"model {unknown.hex()} is not in the registry"):
        populated.get(unknown)
    with pytest.raises(UnknownModel, match=unknown.hex()):
        populated.remove(unknown)
    assert populated.path.read_bytes() == before


def test_a_corrupt_registry_file_is_reported_not_overwritten(
    populated: ModelRegistry, tmp_path: Path
) -> None:
    populated.path.write_text("[1, 2")
    with pytest.raises(ModelRegistryError, match="unreadable"):
        populated.add(saved(tmp_path / "candidate", "mlp"))
    assert populated.path.read_text() == "[1, 2"


# --- runtime ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.INTEGER_KINDS)
@settings(max_examples=6, deadline=None)
@given(input_seed=SEEDS)
def test_re_execution_gives_the_same_hash_with_one_and_two_threads(
    name: str, input_seed: int
) -> None:
    m = zoo_model(name)
    x = m.example_input(input_seed)
    one, two = DeterministicRuntime(threads=1), DeterministicRuntime(threads=2)
    first = output_hash(one.run(m.module, x))
    assert output_hash(one.run(m.module, x)) == first
    assert output_hash(two.run(m.module, x)) == first


def test_token_ids_with_or_without_the_batch_dimension_are_one_job() -> None:
    m = zoo_model("llama")
    ids = m.example_input(1)
    runtime = DeterministicRuntime()
    assert torch.equal(runtime.run(m.module, ids[0]), runtime.run(m.module, ids))


def test_a_model_switched_to_training_runs_in_eval_mode_again() -> None:
    m = zoo.build("gpt2", 0)  # GPT-2 has dropout: training mode would change the bits
    runtime = DeterministicRuntime()
    x = m.example_input(5)
    before = output_hash(runtime.run(m.module, x))
    m.module.train()
    assert output_hash(runtime.run(m.module, x)) == before
    assert not m.module.training


def test_transformers_models_run_eager_attention() -> None:
    m = zoo.build("llama", 0)
    assert isinstance(m.module, PreTrainedModel)
    m.module.set_attn_implementation("sdpa")
    DeterministicRuntime().run(m.module, m.example_input(0))
    assert m.module.config._attn_implementation == zoo.ATTENTION_IMPLEMENTATION


def test_runtime_puts_torch_settings_back() -> None:
    threads = torch.get_num_threads()
    DeterministicRuntime(threads=1).run(zoo_model("mlp").module, zoo_model("mlp").example_input(0))
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(
    ("name", "job_input", "message"),
    [
        ("mlp", torch.zeros(2, 1, 28, 28), "batch dimension 1"),
        ("mlp", torch.zeros(1, 1, 28, 28, dtype=torch.float64), "float32 inputs"),
        ("gpt2", torch.zeros(1, 4), "int64 token ids"),
        ("gpt2", torch.zeros(2, 4, dtype=torch.int64), r"\[seq\] or \[1, seq\]"),
        ("mlp-int8", torch.zeros(1, 1, 28, 28), "integer model takes torch.uint8"),
        ("mlp-int8", torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "batch dimension 1"),
    ],
)
def test_inputs_that_are_not_one_job_are_refused(
    name: str, job_input: torch.Tensor, message: str
) -> None:
    with pytest.raises(JobInputError, match=message):
        DeterministicRuntime().run(zoo_model(name).module, job_input)


def test_runtime_refuses_unsupported_settings() -> None:
    with pytest.raises(ValueError, match="threads"):
        DeterministicRuntime(threads=0)
    with pytest.raises(ValueError, match="cpu or cuda"):
        DeterministicRuntime(device="meta")


def test_hashes_are_sha256_of_the_canonical_tensor() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert output_hash(t) == input_hash(t) == sha256(encode(Tensor.from_torch(t)))
    assert output_hash(t) != output_hash(t.reshape(3, 2))
