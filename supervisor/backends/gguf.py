"""Load a Llama-family GGUF file into mlx-lm's own Llama model and tokenizer wrapper, without converting it.

``mx.load(path, return_metadata=True)`` already reads GGUF: Q4_0, Q4_1, Q4_K and Q8_0 tensors come back as
mlx's affine quantized triplets (packed ``uint32`` weight, ``scales``, ``biases``, 32 weights per group), F32
and F16 as plain arrays, and the other GGML types dequantized to F16. This module maps llama.cpp's tensor
names onto ``mlx_lm.models.llama``, quantizes each layer with the bits its packed shape implies (a Q4_1 file
usually keeps its token embedding at Q8_0), and rebuilds the tokenizer from the ``tokenizer.ggml.*`` metadata.

Two llama.cpp conventions matter. Its converter permutes the Q/K projection rows so each head's rotary pairs
are adjacent, which is what mlx calls ``traditional`` RoPE, so the model is built with
``rope_traditional=True`` instead of undoing the permutation. And Llama 3 files carry ``rope_freqs.weight``,
per-frequency divisors for the rotary angles, which become the ``freqs`` argument of ``mx.fast.rope``.

The approach follows mlx-examples' ``llms/gguf_llm``. mlx and mlx-lm are imported inside the functions: this
module is imported only when a GGUF model is loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supervisor.errors import ModelNotFound

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_TENSOR_TYPES = "F32, F16, BF16, Q4_0, Q4_1, Q4_K and Q8_0 (other GGML types are dequantized to F16 by mlx)"
SUPPORTED_TOKENIZERS = ("gpt2", "llama")

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_TENSOR_NAME = re.compile(r"^(?:blk\.(?P<layer>\d+)\.)?(?P<base>[a-z_]+)\.(?P<part>weight|bias|scales|biases)$")
ROPE_FREQS = "rope_freqs.weight"

# Pre-tokenizer regexes, by ``tokenizer.ggml.pre``, as llama.cpp's llama-vocab.cpp splits text before BPE.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva"}
_LLAMA3_PRE = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}
_QWEN2_PRE = {"qwen2", "deepseek-r1-qwen"}


def load_gguf(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, config)`` for a Llama-family GGUF, like ``mlx_lm.load(..., return_config=True)``.

    ``model`` is an evaluated ``mlx_lm.models.llama.Model``; ``tokenizer`` is mlx-lm's ``TokenizerWrapper``;
    ``config`` holds the model arguments plus ``context_length``, ``quantization`` (per-tensor bits) and
    ``gguf_file``. Raises ``ModelNotFound`` naming the file and what is supported when it cannot be served.
    """
    import mlx.core as mx
    from mlx_lm.models import llama

    try:
        loaded: Any = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelNotFound(
            f"{path}: mlx cannot read this GGUF file ({exc})",
            f"supported: llama-architecture GGUF with {SUPPORTED_TENSOR_TYPES} tensors",
        ) from None
    weights: dict[str, Any] = loaded[0]
    metadata: dict[str, Any] = loaded[1]
    architecture = _string(metadata, "general.architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ModelNotFound(
            f"{path}: GGUF architecture {architecture!r} is not supported",
            f"supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)} (Llama, SmolLM, Mistral-style files); "
            "for other models, point the mlx provider at an MLX model directory or a Hugging Face repo",
        )
    config = model_config_from_metadata(metadata, path=path)
    config["gguf_file"] = str(path)
    rope_freqs = weights.pop(ROPE_FREQS, None)
    weights = translate_weights(weights, path=path)
    config["tie_word_embeddings"] = "lm_head.weight" not in weights
    args = llama.ModelArgs.from_dict(config)  # type: ignore[no-untyped-call]
    model = llama.Model(args)
    quantization = quantize_like(model, weights, path=path)
    config["quantization"] = quantization
    if rope_freqs is not None:
        _use_rope_frequency_factors(model, rope_freqs, config)
    model.eval()
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise ModelNotFound(
            f"{path}: the GGUF tensors do not match a {config['num_hidden_layers']}-layer Llama ({exc})",
            "the file may be truncated or use a Llama variant this loader does not know",
        ) from None
    mx.eval(model.parameters())
    tokenizer = tokenizer_from_metadata(metadata, path=path)
    return model, tokenizer, config


def model_config_from_metadata(metadata: Mapping[str, Any], *, path: Path | str = "<gguf>") -> dict[str, Any]:
    """mlx-lm ``llama.ModelArgs`` fields from the ``llama.*`` GGUF keys (plus ``context_length``)."""
    arch = _string(metadata, "general.architecture") or "llama"
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelNotFound(f"{path}: the GGUF file has no tokenizer.ggml.tokens", "re-export it with llama.cpp")

    def required(key: str) -> Any:
        value = _scalar(metadata, f"{arch}.{key}")
        if value is None:
            raise ModelNotFound(f"{path}: GGUF metadata key {arch}.{key} is missing", "re-export it with llama.cpp")
        return value

    hidden = int(required("embedding_length"))
    heads = int(required("attention.head_count"))
    kv_heads = _scalar(metadata, f"{arch}.attention.head_count_kv")
    head_dim = _scalar(metadata, f"{arch}.attention.key_length") or _scalar(metadata, f"{arch}.rope.dimension_count")
    context_length = int(required("context_length"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(required("block_count")),
        "intermediate_size": int(required("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads) if kv_heads is not None else heads,
        "head_dim": int(head_dim) if head_dim is not None else hidden // heads,
        "rms_norm_eps": float(_scalar(metadata, f"{arch}.attention.layer_norm_rms_epsilon") or 1e-5),
        "rope_theta": float(_scalar(metadata, f"{arch}.rope.freq_base") or 10000.0),
        "rope_traditional": True,
        "vocab_size": len(tokens),
        "max_position_embeddings": context_length,
        "context_length": context_length,
    }
    scaling_type = _string(metadata, f"{arch}.rope.scaling.type")
    scaling_factor = _scalar(metadata, f"{arch}.rope.scaling.factor")
    if scaling_type == "linear" and scaling_factor:
        config["rope_scaling"] = {"type": "linear", "factor": float(scaling_factor)}
    elif scaling_type not in (None, "none", "linear"):
        raise ModelNotFound(
            f"{path}: RoPE scaling {scaling_type!r} is not supported for GGUF files",
            "supported: none, linear, and Llama 3 frequency factors (rope_freqs)",
        )
    return config


def translate_weight_name(name: str) -> str | None:
    """The mlx-lm Llama parameter name for a llama.cpp tensor name, or ``None`` if it has no counterpart."""
    match = _TENSOR_NAME.match(name)
    if match is None:
        return None
    base, part, layer = match["base"], match["part"], match["layer"]
    if layer is not None:
        mapped = _LAYER_TENSORS.get(base)
        return f"model.layers.{layer}.{mapped}.{part}" if mapped else None
    top = _TOP_TENSORS.get(base)
    return f"{top}.{part}" if top else None


def translate_weights(weights: Mapping[str, Any], *, path: Path | str = "<gguf>") -> dict[str, Any]:
    """All tensors renamed to mlx-lm's Llama names; an unknown tensor is an error that names it."""
    out: dict[str, Any] = {}
    for name, value in weights.items():
        mapped = translate_weight_name(name)
        if mapped is None:
            raise ModelNotFound(
                f"{path}: unexpected tensor {name!r} for a llama GGUF",
                "this loader handles plain Llama files (token_embd, blk.N.attn_*/ffn_*, output_norm, output)",
            )
        out[mapped] = value
    return out


def quantize_like(model: Any, weights: Mapping[str, Any], *, path: Path | str = "<gguf>") -> dict[str, Any]:
    """Quantize each layer that has ``scales`` in ``weights``, with bits and group size read off the shapes.

    For a layer whose float shape is ``(out, in)``, the packed weight is ``(out, in * bits / 32)`` ``uint32``
    and the scales are ``(out, in / group_size)``. Returns ``{parameter path: {bits, group_size}}``.
    """
    from mlx.nn.layers.quantized import quantize

    found: dict[str, Any] = {}

    def predicate(module_path: str, module: Any) -> bool | dict[str, Any]:
        scales = weights.get(f"{module_path}.scales")
        if scales is None or not hasattr(module, "to_quantized"):
            return False
        in_dims = module.weight.shape[-1]
        packed = weights[f"{module_path}.weight"]
        bits = packed.shape[-1] * 32 // in_dims
        group_size = in_dims // scales.shape[-1]
        if bits not in (2, 3, 4, 5, 6, 8) or group_size not in (32, 64, 128) or in_dims % group_size:
            raise ModelNotFound(
                f"{path}: tensor {module_path} has a quantization mlx cannot run ({bits} bits, groups of {group_size})",
                f"supported: {SUPPORTED_TENSOR_TYPES}",
            )
        params = {"bits": bits, "group_size": group_size}
        found[module_path] = params
        return params

    quantize(model, class_predicate=predicate)
    for name in weights:
        if name.endswith(".scales") and name.removesuffix(".scales") not in found:
            raise ModelNotFound(
                f"{path}: tensor {name.removesuffix('.scales')} is quantized but its layer cannot be",
                f"supported: {SUPPORTED_TENSOR_TYPES}",
            )
    return found


def _use_rope_frequency_factors(model: Any, rope_freqs: Any, config: dict[str, Any]) -> None:
    """Llama 3: llama.cpp divides each rotary angle by ``rope_freqs[i]``; mlx takes the periods directly."""
    import mlx.core as mx
    from mlx.nn.layers.base import Module

    dims = int(config["head_dim"])
    base = float(config["rope_theta"])
    periods = (base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)) * rope_freqs.astype(mx.float32)

    class FrequencyFactorRoPE(Module):
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self._periods = periods  # underscore: a constant, not a parameter to load

        def __call__(self, x: Any, offset: Any = 0) -> Any:
            return mx.fast.rope(x, dims, traditional=True, base=None, scale=1.0, offset=offset, freqs=self._periods)

    for layer in model.layers:
        layer.self_attn.rope = FrequencyFactorRoPE()
    config["rope_frequency_factors"] = True


# ----------------------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_from_metadata(metadata: Mapping[str, Any], *, path: Path | str = "<gguf>") -> Any:
    """mlx-lm's ``TokenizerWrapper`` around a ``tokenizers`` tokenizer rebuilt from ``tokenizer.ggml.*``.

    ``gpt2`` files get a byte-level BPE from the token list and merges; ``llama`` (SentencePiece) files get
    a BPE with byte fallback whose merges are recovered from the token scores (as Hugging Face's converter).
    The chat template, BOS/EOS and end-of-turn ids come from the metadata.
    """
    from mlx_lm.tokenizer_utils import (
        BPEStreamingDetokenizer,
        SPMStreamingDetokenizer,
        TokenizerWrapper,
    )
    from transformers import PreTrainedTokenizerFast

    kind = _string(metadata, "tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelNotFound(f"{path}: the GGUF file has no tokenizer.ggml.tokens", "re-export it with llama.cpp")
    token_types = _int_list(metadata, "tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    if len(token_types) != len(tokens):
        raise ModelNotFound(
            f"{path}: tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} tokens",
            "the file's tokenizer is damaged; download or re-export it with llama.cpp",
        )
    if kind == "gpt2":
        backend = _byte_level_bpe(metadata, tokens, path=path)
        detokenizer_class: Any = BPEStreamingDetokenizer
    elif kind == "llama":
        backend = _sentencepiece_bpe(metadata, tokens, token_types)
        detokenizer_class = SPMStreamingDetokenizer
    else:
        raise ModelNotFound(
            f"{path}: GGUF tokenizer {kind!r} is not supported",
            f"supported tokenizer.ggml.model values: {', '.join(SUPPORTED_TOKENIZERS)}",
        )
    _add_special_tokens(backend, tokens, token_types)

    def token_at(key: str) -> str | None:
        index = _scalar(metadata, key)
        if index is None or not 0 <= int(index) < len(tokens):
            return None
        return str(tokens[int(index)])

    bos, eos = token_at("tokenizer.ggml.bos_token_id"), token_at("tokenizer.ggml.eos_token_id")
    unk = token_at("tokenizer.ggml.unknown_token_id") if kind == "llama" else None
    # llama.cpp's default: SentencePiece vocabularies start every text with BOS, byte-level BPE ones do not.
    add_bos = _scalar(metadata, "tokenizer.ggml.add_bos_token")
    if (kind == "llama" if add_bos is None else bool(add_bos)) and bos is not None:
        from tokenizers import processors

        bos_id = int(_scalar(metadata, "tokenizer.ggml.bos_token_id"))
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    pad = token_at("tokenizer.ggml.padding_token_id")
    hf_tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token=pad,
        chat_template=_string(metadata, "tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )
    eos_ids = {
        int(value)
        for key in (
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        )
        if (value := _scalar(metadata, key)) is not None
    }
    return TokenizerWrapper(hf_tokenizer, detokenizer_class, eos_token_ids=sorted(eos_ids))


def _byte_level_bpe(metadata: Mapping[str, Any], tokens: Sequence[str], *, path: Path | str) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    merges_raw = metadata.get("tokenizer.ggml.merges")
    if not isinstance(merges_raw, list):
        raise ModelNotFound(f"{path}: a gpt2-style GGUF tokenizer needs tokenizer.ggml.merges", "re-export it")
    vocab = {str(token): index for index, token in enumerate(tokens)}
    merges: list[tuple[str, str]] = []
    for merge in merges_raw:
        left, space, right = str(merge).partition(" ")
        # tokenizers panics (it does not raise) on a merge outside the vocabulary, so check first.
        if not space or left not in vocab or right not in vocab or left + right not in vocab:
            raise ModelNotFound(
                f"{path}: tokenizer.ggml.merges entry {merge!r} does not match tokenizer.ggml.tokens",
                "the file's tokenizer is damaged; download or re-export it with llama.cpp",
            )
        merges.append((left, right))
    pre = _string(metadata, "tokenizer.ggml.pre") or "default"
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_PRE))

    def split_then_bytes(pattern: str) -> Any:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
        return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    # ByteLevel's own regex is GPT-2's, so the GPT-2 family needs no Split (as in their tokenizer.json files).
    gpt2_bytes = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _LLAMA3_PRE:
        backend.pre_tokenizer = split_then_bytes(_LLAMA3_PATTERN)
    elif pre in _QWEN2_PRE:
        backend.pre_tokenizer = split_then_bytes(_QWEN2_PATTERN)
    elif pre in _DIGIT_SPLIT_PRE:
        digits = pre_tokenizers.Digits(individual_digits=True)
        backend.pre_tokenizer = pre_tokenizers.Sequence([digits, gpt2_bytes])
    else:
        if pre not in ("default", "gpt2", "gpt-2"):
            log.warning("%s: unknown tokenizer.ggml.pre %r; splitting text the GPT-2 way", path, pre)
        backend.pre_tokenizer = gpt2_bytes
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(metadata: Mapping[str, Any], tokens: Sequence[str], token_types: Sequence[int]) -> Any:
    """A Llama/SentencePiece BPE: merges ranked by the score of the piece they produce (higher first)."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = _float_list(metadata, "tokenizer.ggml.scores") or []
    if len(scores) != len(tokens):  # no usable scores: earlier ids merge first, as SentencePiece orders them
        scores = [-float(i) for i in range(len(tokens))]
    vocab = {str(token): index for index, token in enumerate(tokens)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for index, piece in enumerate(tokens):
        if token_types[index] not in (TOKEN_NORMAL, TOKEN_USER_DEFINED) or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[index], vocab[left], vocab[right], left, right))
    ranked.sort()
    merges = [(left, right) for _, _, _, left, right in ranked]
    unk_index = _scalar(metadata, "tokenizer.ggml.unknown_token_id")
    unk = str(tokens[int(unk_index)]) if unk_index is not None and 0 <= int(unk_index) < len(tokens) else None
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    steps: list[Any] = [normalizers.Replace(" ", "\u2581")]
    add_space_prefix = _scalar(metadata, "tokenizer.ggml.add_space_prefix")
    if add_space_prefix is None or bool(add_space_prefix):
        steps.insert(0, normalizers.Prepend("\u2581"))
    backend.normalizer = normalizers.Sequence(steps)
    decoder_steps: list[Any] = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix is None or bool(add_space_prefix):
        decoder_steps.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(decoder_steps)
    return backend


def _add_special_tokens(backend: Any, tokens: Sequence[str], token_types: Sequence[int]) -> None:
    """Control tokens (``<|im_start|>``) and user-defined ones are matched whole, before any splitting."""
    from tokenizers import AddedToken

    added = [
        AddedToken(str(token), special=kind == TOKEN_CONTROL, normalized=False)
        for token, kind in zip(tokens, token_types, strict=False)
        if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED) and token
    ]
    if added:
        backend.add_special_tokens([t for t in added if t.special])
        backend.add_tokens([t for t in added if not t.special])


# ----------------------------------------------------------------------------------------------------------
# Metadata values: mx.load gives 0-d mx.arrays for numbers, str, list[str], and 1-d mx.arrays for lists.


def _scalar(metadata: Mapping[str, Any], key: str) -> Any:
    value = metadata.get(key)
    if value is None or isinstance(value, (str, list)):
        return None
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _string(metadata: Mapping[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) else None


def _int_list(metadata: Mapping[str, Any], key: str) -> list[int] | None:
    value = metadata.get(key)
    if value is None:
        return None
    values = value.tolist() if hasattr(value, "tolist") else list(value)
    return [int(v) for v in values]


def _float_list(metadata: Mapping[str, Any], key: str) -> list[float] | None:
    value = metadata.get(key)
    if value is None:
        return None
    values = value.tolist() if hasattr(value, "tolist") else list(value)
    return [float(v) for v in values]


# ----------------------------------------------------------------------------------------------------------
# The header alone: metadata and tensor shapes without reading a single weight (an Ollama client's /api/show)

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# llama.cpp's llama_ftype (general.file_type), as Ollama names them in quantization_level.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


def read_gguf_header(path: Path, *, max_array: int = 64) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """``(metadata, tensor shapes)`` from a GGUF file's header; arrays longer than ``max_array`` (the
    tokenizer's vocabulary) are skipped, not read into memory. Raises ``ModelNotFound`` for a file that is not
    GGUF."""
    import struct

    with open(path, "rb") as f:

        def take(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ModelNotFound(f"{path}: the GGUF header is cut short", "re-download or re-export the file")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return bytes(f.read(take("<Q"))).decode("utf-8", "replace")

        def value(kind: int) -> Any:
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item_kind, count = take("<I"), take("<Q")
                if count > max_array and item_kind in _GGUF_SCALARS:
                    f.seek(count * struct.calcsize(_GGUF_SCALARS[item_kind]), 1)
                    return None
                if count > max_array and item_kind == _GGUF_STRING:
                    for _ in range(count):
                        f.seek(take("<Q"), 1)
                    return None
                items = [value(item_kind) for _ in range(count)]
                return items if count <= max_array else None
            if kind not in _GGUF_SCALARS:
                raise ModelNotFound(f"{path}: unknown GGUF value type {kind}", "re-export the file with llama.cpp")
            return take(_GGUF_SCALARS[kind])

        if f.read(4) != b"GGUF":
            raise ModelNotFound(f"{path} is not a GGUF file (no GGUF magic)", "point the model at a .gguf file")
        take("<I")  # version
        tensor_count, kv_count = take("<Q"), take("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = string()
            item = value(take("<I"))
            if item is not None:
                metadata[key] = item
        tensors: dict[str, tuple[int, ...]] = {}
        for _ in range(tensor_count):
            name = string()
            dims = tuple(take("<Q") for _ in range(take("<I")))
            take("<I")  # type
            take("<Q")  # offset
            tensors[name] = dims
    return metadata, tensors
