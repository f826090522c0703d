"""A model's shape for sizing, read from a GGUF file's metadata, from Ollama's model details, or
from a saved transformers artifact (its config.json and safetensors headers).

GGUF files are read with the ``gguf`` package (llama.cpp's own reader: metadata and tensor
table only, the weights stay on disk). Ollama's ``/api/show`` gives the same GGUF keys under
``model_info`` but no tensor table, so its weight size is parameters × the quantization's
nominal bits per weight (and says it is an estimate). An artifact's parameters and bytes are
summed from its safetensors headers (``adapters.artifact.files``: exact, no weights loaded).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.tools.fit import ModelShape

# llama.cpp's nominal bits per weight by quantization (from its quantize tool's table); K-quant
# mixes ("_M", "_S") are averages over a typical model.
NOMINAL_BPW: Mapping[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "Q2_K": 3.35,
}


class ModelMetaError(ValueError):
    """The model's metadata cannot be read or lacks what sizing needs."""


def _arch_value(meta: Mapping[str, Any], arch: str, key: str, source: str) -> Any:
    full = f"{arch}.{key}"
    if full not in meta:
        raise ModelMetaError(
            f"{source}: metadata key {full!r} is missing; this architecture cannot be sized "
            "automatically — give the numbers by hand (see `tiergate fit --help`)"
        )
    return meta[full]


def _per_layer(value: Any, layers: int) -> int:
    """Some models give KV heads per layer (a list): size by the average, rounded up."""
    if isinstance(value, list | tuple):
        return -(-sum(int(v) for v in value) // max(1, layers))
    return int(value)


def shape_from_metadata(
    meta: Mapping[str, Any],
    *,
    name: str,
    parameters: int,
    weight_bytes: int | None,
    quantization: str,
    digest: str | None,
) -> ModelShape:
    """Build a shape from GGUF-style keys (``general.architecture``, ``<arch>.block_count``…).
    ``weight_bytes`` None: estimated from the quantization's nominal bits per weight."""
    source = name
    arch = str(meta.get("general.architecture", ""))
    if not arch:
        raise ModelMetaError(f"{source}: no general.architecture in the model's metadata")
    layers = int(_arch_value(meta, arch, "block_count", source))
    heads = _per_layer(_arch_value(meta, arch, "attention.head_count", source), layers)
    kv_heads = _per_layer(meta.get(f"{arch}.attention.head_count_kv", heads), layers)
    embedding = int(_arch_value(meta, arch, "embedding_length", source))
    key_size = int(meta.get(f"{arch}.attention.key_length", embedding // max(1, heads)))
    value_size = int(meta.get(f"{arch}.attention.value_length", key_size))
    context = int(meta.get(f"{arch}.context_length", 0))
    vocab = meta.get(f"{arch}.vocab_size")
    if vocab is None:
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if isinstance(tokens, list | tuple) else 0
    exact = weight_bytes is not None
    if weight_bytes is None:
        bpw = NOMINAL_BPW.get(quantization.upper())
        if bpw is None:
            raise ModelMetaError(
                f"{source}: unknown quantization {quantization!r}; known: {', '.join(NOMINAL_BPW)}"
            )
        weight_bytes = int(parameters * bpw / 8)
    return ModelShape(
        name=name,
        architecture=arch,
        parameters=parameters,
        weight_bytes=weight_bytes,
        weights_exact=exact,
        quantization=quantization,
        layers=layers,
        kv_heads=kv_heads,
        key_size=key_size,
        value_size=value_size,
        context_train=context,
        vocab=int(vocab),
        digest=digest,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_gguf(path: Path, *, with_digest: bool = True) -> ModelShape:
    """Read a GGUF file's metadata and tensor table (not its weights)."""
    from gguf import GGUFReader
    from gguf.constants import LlamaFileType

    if not path.is_file():
        raise ModelMetaError(f"{path}: no such file; give the path of a .gguf model file")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ModelMetaError(f"{path}: not a readable GGUF file ({exc})") from None
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key == "tokenizer.ggml.tokens":
            meta[key] = [None] * len(field.data)  # only the count matters
            continue
        if key.startswith("tokenizer."):
            continue
        meta[key] = field.contents()
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    weight_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    file_type = meta.get("general.file_type")
    try:
        quantization = (
            LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
            if file_type is not None
            else "unknown"
        )
    except ValueError:
        quantization = f"file type {file_type}"
    name = str(meta.get("general.name") or path.stem)
    return shape_from_metadata(
        meta,
        name=name,
        parameters=parameters,
        weight_bytes=weight_bytes,
        quantization=quantization,
        digest=f"sha256:{file_sha256(path)}" if with_digest else None,
    )


def shape_from_ollama(model: str, show: Mapping[str, Any], digest: str | None) -> ModelShape:
    """From Ollama's ``/api/show`` body (``model_info`` and ``details``)."""
    info = show.get("model_info") or show.get("modelinfo") or {}
    details = show.get("details") or {}
    parameters = int(info.get("general.parameter_count") or 0)
    if not parameters:
        raise ModelMetaError(f"ollama model {model}: /api/show gave no general.parameter_count")
    return shape_from_metadata(
        info,
        name=model,
        parameters=parameters,
        weight_bytes=None,
        quantization=str(details.get("quantization_level") or "unknown"),
        digest=digest,
    )


# An artifact's KV cache is kept in the weights' dtype (PyTorch has no separate cache type).
ARTIFACT_KV_TYPE: Mapping[str, str] = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def _config_int(config: Mapping[str, Any], key: str, source: str) -> int:
    value = config.get(key)
    if not isinstance(value, int):
        raise ModelMetaError(
            f"{source}: config.json has no integer {key!r}; this architecture cannot be sized "
            "automatically"
        )
    return value


def read_artifact(path: Path) -> ModelShape:
    """A saved transformers model directory: the shape from ``config.json``, parameters and
    bytes per dtype from the safetensors headers (the weights are not read)."""
    from adapters.artifact.files import (
        ArtifactFileError,
        read_config,
        require_directory,
        summarise_weights,
        text_config,
    )

    try:
        require_directory(path)
        config = text_config(read_config(path))
        weights = summarise_weights(path)
    except ArtifactFileError as exc:
        raise ModelMetaError(str(exc)) from None
    source = str(path / "config.json")
    layers = _config_int(config, "num_hidden_layers", source)
    heads = _config_int(config, "num_attention_heads", source)
    hidden = _config_int(config, "hidden_size", source)
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // max(1, heads)
    return ModelShape(
        name=path.name,
        architecture=str(config.get("model_type") or "unknown"),
        parameters=weights.parameters,
        weight_bytes=weights.weight_bytes,
        weights_exact=True,
        quantization=weights.main_dtype,
        layers=layers,
        kv_heads=int(kv_heads),
        key_size=int(head_dim),
        value_size=int(head_dim),
        context_train=int(config.get("max_position_embeddings") or 0),
        vocab=int(config.get("vocab_size") or 0),
        digest=None,
    )
