"""Tiny random Llama models that mlx-lm loads offline: a Hugging Face-style directory, and the same as GGUF.

Both builders derive everything from one seed, so ``build_tiny_llama(d)`` and ``build_tiny_gguf(p, "f32")``
hold the same weights and the same byte-level BPE tokenizer: the GGUF copy only differs the way llama.cpp's
converter makes it differ (GGML tensor names, Q/K rows permuted for interleaved RoPE, optional Q8_0/Q4_0/Q4_1
blocks). A test can therefore check the GGUF loader against ``mlx_lm.load`` on identical numbers.

The language-model head has zero rows for the special tokens and for every token that is not printable ASCII,
so with greedy sampling (temperature 0) the model never stops on its own (every generation runs to
``max_tokens``, which keeps token counts predictable) and each token streams out as text at once.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_TOKEN = "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = (
    "The capital of France is Paris.",
    "Hello, how are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "A supervisor runs agents and checks every answer before it is kept.",
    "Local models cost nothing per token; the cloud bills every one of them.",
)

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 256
MAX_POSITIONS = 512
ROPE_THETA = 10000.0
RMS_EPS = 1e-5

GGUFQuant = Literal["f32", "f16", "q8_0", "q4_0", "q4_1"]


@cache
def _tokenizer_json() -> str:
    """A byte-level BPE (GPT-2 style) trained on a few sentences, so GGUF can describe it as ``gpt2``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer)
    return str(tokenizer.to_str())


def _vocab() -> dict[str, int]:
    vocab: dict[str, int] = json.loads(_tokenizer_json())["model"]["vocab"]
    return vocab


def _config(seed: int, eos_token_ids: Sequence[int] = ()) -> dict[str, Any]:
    vocab = _vocab()
    eos: int | list[int] = [vocab[EOS_TOKEN], *eos_token_ids] if eos_token_ids else vocab[EOS_TOKEN]
    return {
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "intermediate_size": INTERMEDIATE,
        "rms_norm_eps": RMS_EPS,
        "vocab_size": len(vocab),
        "max_position_embeddings": MAX_POSITIONS,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": False,
        "eos_token_id": eos,
        "bos_token_id": vocab["<|endoftext|>"],
        "tiny_seed": seed,
    }


def _printable(token: str) -> bool:
    """Whether a byte-level BPE token decodes to printable ASCII (space included)."""
    from tokenizers import decoders

    text = decoders.ByteLevel().decode([token])
    return bool(text) and all(" " <= ch <= "~" for ch in text)


def _weights(seed: int) -> dict[str, np.ndarray]:
    """Random float32 weights, Hugging Face names; the head only picks printable tokens (see module doc)."""
    rng = np.random.default_rng(seed)
    vocab = _vocab()
    head_dim = HIDDEN // HEADS

    def dense(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0.0, 0.3, size=(rows, cols)).astype(np.float32)

    weights: dict[str, np.ndarray] = {"model.embed_tokens.weight": dense(len(vocab), HIDDEN)}
    for i in range(LAYERS):
        prefix = f"model.layers.{i}"
        weights[f"{prefix}.self_attn.q_proj.weight"] = dense(HEADS * head_dim, HIDDEN)
        weights[f"{prefix}.self_attn.k_proj.weight"] = dense(KV_HEADS * head_dim, HIDDEN)
        weights[f"{prefix}.self_attn.v_proj.weight"] = dense(KV_HEADS * head_dim, HIDDEN)
        weights[f"{prefix}.self_attn.o_proj.weight"] = dense(HIDDEN, HEADS * head_dim)
        weights[f"{prefix}.mlp.gate_proj.weight"] = dense(INTERMEDIATE, HIDDEN)
        weights[f"{prefix}.mlp.up_proj.weight"] = dense(INTERMEDIATE, HIDDEN)
        weights[f"{prefix}.mlp.down_proj.weight"] = dense(HIDDEN, INTERMEDIATE)
        weights[f"{prefix}.input_layernorm.weight"] = np.ones(HIDDEN, dtype=np.float32)
        weights[f"{prefix}.post_attention_layernorm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    weights["model.norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    head = dense(len(vocab), HIDDEN)
    for token, index in vocab.items():
        if token in SPECIAL_TOKENS or not _printable(token):
            head[index] = 0.0
    weights["lm_head.weight"] = head
    return weights


def build_tiny_llama(
    directory: Path,
    *,
    seed: int = 0,
    eos_token_ids: Sequence[int] = (),
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny random Llama (config.json, model.safetensors, tokenizer files) that ``mlx_lm.load`` reads.

    ``eos_token_ids`` adds end-of-sequence ids to config.json (mlx-lm stops on them), so a test can make the
    model stop on a token it is known to pick; ``config_overrides`` edits config.json (``rope_scaling``, ...).
    """
    import mlx.core as mx

    directory.mkdir(parents=True, exist_ok=True)
    config = {**_config(seed, eos_token_ids), **(config_overrides or {})}
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    arrays = {name: mx.array(value) for name, value in _weights(seed).items()}
    mx.save_safetensors(str(directory / "model.safetensors"), arrays, metadata={"format": "mlx"})
    (directory / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return directory


def build_looping_llama(directory: Path, cycle: str = "A-sort\n", *, seed: int = 0, window: int = 4096) -> Path:
    """A tiny Llama that, under greedy sampling, writes ``cycle`` over and over (a model stuck in a loop).

    Every layer's output projections are zero, so the hidden state is the current token's embedding; the head
    maps the embedding of each token of ``cycle`` to the next one (and the chat template's closing newline to
    the first), and every other row of the head is zero. The tokens of ``cycle`` must be distinct. Its context
    window is ``window`` tokens, so a test can give it an output budget far beyond where the guard stops it.
    """
    import mlx.core as mx
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(_tokenizer_json())
    ids = tokenizer.encode(cycle).ids
    if len(set(ids)) != len(ids) or not cycle.endswith("\n"):
        raise ValueError(f"{cycle!r}: the tokens of the cycle must be distinct and it must end with a newline")
    weights = _weights(seed)
    for name in list(weights):
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = np.zeros_like(weights[name])
    embed = weights["model.embed_tokens.weight"]
    hidden = embed / np.sqrt(np.mean(embed**2, axis=1, keepdims=True) + RMS_EPS)  # the final RMSNorm
    head = np.zeros_like(weights["lm_head.weight"])
    for current, following in zip(ids, [*ids[1:], ids[0]], strict=True):
        head[following] = 10.0 * hidden[current]
    weights["lm_head.weight"] = head
    directory.mkdir(parents=True, exist_ok=True)
    config = {**_config(seed), "max_position_embeddings": window}
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    mx.save_safetensors(
        str(directory / "model.safetensors"),
        {name: mx.array(value) for name, value in weights.items()},
        metadata={"format": "mlx"},
    )
    (directory / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return directory


# ----------------------------------------------------------------------------------------------------------
# GGUF (written by hand: mx.save_gguf cannot write quantized blocks)

_GGUF_MAGIC = b"GGUF"
_GGUF_VERSION = 3
_ALIGNMENT = 32
_TYPE_UINT32, _TYPE_INT32, _TYPE_FLOAT32, _TYPE_BOOL, _TYPE_STRING, _TYPE_ARRAY = 4, 5, 6, 7, 8, 9
_GGML_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 8}
_FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7}
_BLOCK = 32


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _gguf_value(value: Any) -> tuple[int, bytes]:
    """(GGUF value type, encoded value) for the few Python types the metadata uses."""
    if isinstance(value, bool):
        return _TYPE_BOOL, struct.pack("<?", value)
    if isinstance(value, int):
        return _TYPE_UINT32, struct.pack("<I", value)
    if isinstance(value, float):
        return _TYPE_FLOAT32, struct.pack("<f", value)
    if isinstance(value, str):
        return _TYPE_STRING, _gguf_string(value)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            body = b"".join(_gguf_string(v) for v in value)
            return _TYPE_ARRAY, struct.pack("<IQ", _TYPE_STRING, len(value)) + body
        body = b"".join(struct.pack("<i", int(v)) for v in value)
        return _TYPE_ARRAY, struct.pack("<IQ", _TYPE_INT32, len(value)) + body
    raise TypeError(f"no GGUF encoding for {type(value).__name__}")


def _quantize_q8_0(values: np.ndarray) -> bytes:
    blocks = values.reshape(-1, _BLOCK).astype(np.float32)
    scale = np.abs(blocks).max(axis=1) / 127.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    quants = np.round(blocks * inverse[:, None]).astype(np.int8)
    out = np.zeros(len(blocks), dtype=[("d", "<f2"), ("q", "i1", _BLOCK)])
    out["d"], out["q"] = scale, quants
    return out.tobytes()


def _pack_nibbles(quants: np.ndarray) -> np.ndarray:
    """GGML packs element j in the low nibble and element j + 16 in the high nibble of byte j."""
    low, high = quants[:, : _BLOCK // 2], quants[:, _BLOCK // 2 :]
    return (low | (high << 4)).astype(np.uint8)


def _quantize_q4_0(values: np.ndarray) -> bytes:
    blocks = values.reshape(-1, _BLOCK).astype(np.float32)
    extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    scale = extreme / -8.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    quants = np.clip(np.floor(blocks * inverse[:, None] + 8.5), 0, 15).astype(np.uint8)
    out = np.zeros(len(blocks), dtype=[("d", "<f2"), ("q", "u1", _BLOCK // 2)])
    out["d"], out["q"] = scale, _pack_nibbles(quants)
    return out.tobytes()


def _quantize_q4_1(values: np.ndarray) -> bytes:
    blocks = values.reshape(-1, _BLOCK).astype(np.float32)
    low, high = blocks.min(axis=1), blocks.max(axis=1)
    scale = (high - low) / 15.0
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    quants = np.clip(np.round((blocks - low[:, None]) * inverse[:, None]), 0, 15).astype(np.uint8)
    out = np.zeros(len(blocks), dtype=[("d", "<f2"), ("m", "<f2"), ("q", "u1", _BLOCK // 2)])
    out["d"], out["m"], out["q"] = scale, low, _pack_nibbles(quants)
    return out.tobytes()


def _encode_tensor(values: np.ndarray, quant: GGUFQuant) -> tuple[int, bytes]:
    if quant == "f32" or values.ndim == 1:
        return _GGML_TYPE["f32"], values.astype("<f4").tobytes()
    if quant == "f16":
        return _GGML_TYPE["f16"], values.astype("<f2").tobytes()
    encode = {"q8_0": _quantize_q8_0, "q4_0": _quantize_q4_0, "q4_1": _quantize_q4_1}[quant]
    return _GGML_TYPE[quant], encode(values)


def _permute_for_gguf(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders Q/K rows so each head's rotary pairs are adjacent (interleaved RoPE)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_tensors(seed: int, *, tie_embeddings: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in _weights(seed).items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = value
        elif name == "model.norm.weight":
            out["output_norm.weight"] = value
        elif name == "lm_head.weight":
            if not tie_embeddings:
                out["output.weight"] = value
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.removesuffix(".weight")
            if module == "self_attn.q_proj":
                value = _permute_for_gguf(value, HEADS)
            elif module == "self_attn.k_proj":
                value = _permute_for_gguf(value, KV_HEADS)
            out[f"blk.{layer}.{_GGUF_NAMES[module]}.weight"] = value
    return out


def gguf_metadata(seed: int = 0, *, quant: GGUFQuant = "f32") -> dict[str, Any]:
    """The GGUF key/value metadata of the tiny model (llama architecture, ``gpt2`` tokenizer)."""
    tokenizer = json.loads(_tokenizer_json())
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [" ".join(pair) if isinstance(pair, list) else str(pair) for pair in tokenizer["model"]["merges"]]
    return {
        "general.architecture": "llama",
        "general.name": f"tiny-llama-seed{seed}",
        "general.file_type": _FILE_TYPE[quant],
        "general.alignment": _ALIGNMENT,
        "llama.context_length": MAX_POSITIONS,
        "llama.embedding_length": HIDDEN,
        "llama.block_count": LAYERS,
        "llama.feed_forward_length": INTERMEDIATE,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV_HEADS,
        "llama.attention.layer_norm_rms_epsilon": RMS_EPS,
        "llama.rope.freq_base": ROPE_THETA,
        "llama.rope.dimension_count": HIDDEN // HEADS,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if token in SPECIAL_TOKENS else 1 for token in tokens],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": vocab["<|endoftext|>"],
        "tokenizer.ggml.eos_token_id": vocab[EOS_TOKEN],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }


def write_gguf(path: Path, metadata: dict[str, Any], tensors: dict[str, tuple[int, tuple[int, ...], bytes]]) -> Path:
    """Write a GGUF v3 file: ``tensors`` maps name -> (GGML type, shape in row-major order, encoded bytes)."""
    header = bytearray(_GGUF_MAGIC + struct.pack("<IQQ", _GGUF_VERSION, len(tensors), len(metadata)))
    for key, value in metadata.items():
        value_type, encoded = _gguf_value(value)
        header += _gguf_string(key) + struct.pack("<I", value_type) + encoded
    offset = 0
    payload = bytearray()
    for name, (ggml_type, shape, data) in tensors.items():
        dims = tuple(reversed(shape))  # GGML lists the fastest-moving dimension first
        header += _gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", ggml_type, offset)
        payload += data + b"\0" * (-len(data) % _ALIGNMENT)
        offset = len(payload)
    header += b"\0" * (-len(header) % _ALIGNMENT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(header) + bytes(payload))
    return path


def build_tiny_gguf(
    path: Path,
    quant: GGUFQuant = "f32",
    *,
    seed: int = 0,
    tie_embeddings: bool = False,
    extra_tensors: Mapping[str, np.ndarray] | None = None,
    metadata_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write the tiny model as a llama GGUF; norms (and ``extra_tensors``) stay F32 as llama.cpp keeps them.

    With ``tie_embeddings`` there is no ``output.weight`` and the head reuses the token embedding.
    """
    tensors: dict[str, tuple[int, tuple[int, ...], bytes]] = {}
    for name, value in _gguf_tensors(seed, tie_embeddings=tie_embeddings).items():
        ggml_type, data = _encode_tensor(value, quant)
        tensors[name] = (ggml_type, value.shape, data)
    for name, value in (extra_tensors or {}).items():
        tensors[name] = (_GGML_TYPE["f32"], value.shape, value.astype("<f4").tobytes())
    metadata = {**gguf_metadata(seed, quant=quant), **(metadata_overrides or {})}
    return write_gguf(path, metadata, tensors)


def tiny_config(seed: int = 0) -> dict[str, Any]:
    """The config.json that ``build_tiny_llama`` writes."""
    return _config(seed)


def tiny_reference_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The float32 weights ``build_tiny_gguf`` encodes, in GGUF names (Q/K already permuted)."""
    return _gguf_tensors(seed, tie_embeddings=False)
