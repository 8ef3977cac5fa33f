"""Small seeded checkpoints of real architectures, as operators hold them: built in-process.

Each is what ``save_pretrained`` writes for a causal LM of that architecture
(config.json, model.safetensors) plus a byte-level BPE tokenizer
(tokenizer.json, with a ChatML chat template), a few layers wide enough to
exercise the real code paths. :func:`write_gguf` writes a Llama-architecture
model as a GGUF file the way llama.cpp's converter lays it out (tensor names,
the rotary permutation of the query and key weights, the tokenizer in the
metadata), so the GGUF path is tested without a downloaded file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from prover.llm.tokenizer import CHATML_TEMPLATE

VOCAB = 320
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MERGES = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ã", "©"), ("i", "n"), ("Ġ", "a"), ("e", "r"))
"""A few merges: words become tokens, and 'é' (two UTF-8 bytes) one token; an emoji stays
four byte tokens, so a character can span several tokens."""
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
         "vocab_size": VOCAB, "bos_token_id": 256 + len(MERGES), "pad_token_id": 256 + len(MERGES),
         "eos_token_id": 256 + len(MERGES) + 2}

ARCHITECTURES: dict[str, PretrainedConfig] = {
    "llama": LlamaConfig(**SMALL),
    "smollm": LlamaConfig(**{**SMALL, "tie_word_embeddings": True, "rope_theta": 100000.0}),
    "qwen2": Qwen2Config(**SMALL),
    "qwen3": Qwen3Config(**SMALL, head_dim=8),
    "mistral": MistralConfig(**SMALL, sliding_window=24),
    "gemma2": Gemma2Config(**SMALL, head_dim=8, sliding_window=24, query_pre_attn_scalar=8),
    "gemma3": Gemma3TextConfig(**SMALL, head_dim=8, sliding_window=24, query_pre_attn_scalar=8),
    "phi3": Phi3Config(**SMALL),
    "gpt2": GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=32, n_layer=2, n_head=4,
                       bos_token_id=SMALL["bos_token_id"], eos_token_id=SMALL["eos_token_id"]),
}
"""Small configs; Mistral, Gemma 2 and Gemma 3 with sliding windows short enough that jobs
outrun them; Gemma 2 caps its logits."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode as table

    mapping: dict[int, str] = table()
    return mapping


def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the merges above and ChatML special tokens."""
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    for special in SPECIALS:
        vocab[special] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=list(MERGES)))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML_TEMPLATE)


def build(name: str, seed: int = 0) -> PreTrainedModel:
    """A seeded model of architecture ``name``; the global RNG is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module: PreTrainedModel = AutoModelForCausalLM.from_config(ARCHITECTURES[name])
        with torch.no_grad():  # peaked next-token distributions, as trained models have
            for p in module.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.15)
    return module.eval()


def save_checkpoint(directory: Path, name: str, seed: int = 0) -> PreTrainedModel:
    """``save_pretrained`` output for architecture ``name``, with the tokenizer beside it."""
    module = build(name, seed)
    module.save_pretrained(directory, safe_serialization=True)
    tokenizer().save_pretrained(directory)
    return module


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> np.ndarray:
    """llama.cpp's layout of the rotary query/key rows (its converter's ``permute``)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape).numpy())


def write_gguf(path: Path, module: PreTrainedModel, architecture: str = "llama") -> None:
    """Write a Llama model (float32 tensors) and the test tokenizer as a GGUF file."""
    import gguf

    config: Any = module.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("assay test llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_vocab_size(config.vocab_size)
    tok = tokenizer()
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    tokens += [f"<unused{i}>" for i in range(config.vocab_size - len(tokens))]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(vocab["<|endoftext|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_chat_template(CHATML_TEMPLATE)
    state = module.state_dict()
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    for i in range(config.num_hidden_layers):
        for ours, theirs in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                             ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
                             ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                             ("mlp.down_proj", "ffn_down"), ("input_layernorm", "attn_norm"),
                             ("post_attention_layernorm", "ffn_norm")):
            names[f"model.layers.{i}.{ours}.weight"] = f"blk.{i}.{theirs}.weight"
    for ours, theirs in names.items():
        if ours not in state:
            continue
        w = state[ours].float()
        if theirs.endswith("attn_q.weight"):
            array = _llama_cpp_permute(w, heads)
        elif theirs.endswith("attn_k.weight"):
            array = _llama_cpp_permute(w, kv_heads)
        else:
            array = w.numpy()
        writer.add_tensor(theirs, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
