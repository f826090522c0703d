"""Loading an artifact with PyTorch: the device, the dtype, int8 dynamic quantization, the
tokenizer and its chat template. Imports torch and transformers, so only the worker thread of
an ``artifact`` backend (and the offline tools) import this module."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapters.artifact.errors import DeviceUnavailable, NoChatTemplate
from adapters.artifact.files import context_length, read_config, require_directory
from adapters.config import ArtifactConfig

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model ready to generate, with what the generation loop needs to know about it."""

    model: Any  # a transformers PreTrainedModel (or its int8 dynamic-quantized copy)
    tokenizer: Any  # a transformers tokenizer with a chat template
    device: torch.device
    dtype: torch.dtype
    eos_ids: frozenset[int]
    context_window: int | None
    # The texts of the tokenizer's special tokens, which message content must not produce.
    special_texts: frozenset[str] = frozenset()


def pick_device(requested: str) -> torch.device:
    """``auto``: CUDA, then Apple MPS, then the CPU. A device named but absent is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device: cuda, but torch sees no CUDA GPU here")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable("device: mps, but torch sees no Apple MPS device here")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto``: float32 on the CPU, bfloat16 on CUDA (float16 without it), float16 on MPS."""
    if requested != "auto":
        return _DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def quantize_int8(model: Any, *, inplace: bool = True) -> Any:
    """Every ``nn.Linear`` of ``model`` as int8 weights with activations quantized on the fly
    (PyTorch dynamic quantization; CPU only). ``inplace`` swaps the layers in ``model`` itself,
    so the float32 weights are freed layer by layer instead of copied first (a lower peak);
    ``inplace=False`` returns a quantized copy and leaves ``model`` as it was."""
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.ao.quantization in favour of the torchao package; the
        # eager API still works and is what this backend documents. Silence only those two.
        warnings.filterwarnings(
            "ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace
        )


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every token that ends a turn: the generation config's EOS ids and the tokenizer's."""
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        found.add(int(tokenizer.eos_token_id))
    return frozenset(found)


def special_texts(tokenizer: Any) -> frozenset[str]:
    """The texts that tokenizing with special tokens (transformers' default) turns into a
    special token, and ``split_special_tokens=True`` does not."""
    return frozenset(
        token.content for token in tokenizer.added_tokens_decoder.values() if token.special
    )


def load(config: ArtifactConfig) -> Loaded:
    """Load the artifact at ``config.path`` as the config says (on the calling thread)."""
    # Never reach the hub: an artifact is a local directory, and a missing file is an error,
    # not a download (local_files_only below says so too, per call).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a server's log is no place for progress bars
    path = Path(config.path)
    require_directory(path)
    if config.n_threads is not None:
        torch.set_num_threads(config.n_threads)
    device = torch.device("cpu") if config.quantize == "int8" else pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplate(str(path))
    model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    model.eval()
    if config.quantize == "int8":
        model = quantize_int8(model)
    else:
        model.to(device)
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        eos_ids=eos_ids(model, tokenizer),
        context_window=context_length(read_config(path)),
        special_texts=special_texts(tokenizer),
    )
