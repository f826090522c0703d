"""What an artifact directory holds, read without torch: its ``config.json`` and the JSON
headers of its safetensors files (the weights stay on disk).

A safetensors file starts with an 8-byte little-endian header length, then that many bytes of
JSON: ``{"tensor name": {"dtype": "F32", "shape": [...], "data_offsets": [start, end]}, ...,
"__metadata__": {...}}``. That is enough to count parameters and bytes per dtype exactly.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bytes per element of the safetensors dtypes a language model's weights come in.
SAFETENSORS_BYTES: Mapping[str, float] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


class ArtifactFileError(ValueError):
    """The directory is not a readable Hugging Face artifact; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class WeightsSummary:
    """The tensors of an artifact's safetensors files, from their headers."""

    parameters: int
    weight_bytes: int
    dtypes: Mapping[str, int]  # safetensors dtype -> parameters stored in it
    files: int

    @property
    def main_dtype(self) -> str:
        """The dtype most parameters are stored in (``F32``, ``BF16``...)."""
        return max(self.dtypes.items(), key=lambda item: item[1])[0] if self.dtypes else "?"


def require_directory(path: Path) -> None:
    """Raise ``ArtifactFileError`` unless ``path`` looks like a saved transformers model."""
    if not path.is_dir():
        raise ArtifactFileError(
            f"{path} is not a directory: `path:` must name the folder that save_pretrained "
            f"wrote (config.json, *.safetensors, tokenizer files)"
        )
    if not (path / "config.json").is_file():
        raise ArtifactFileError(f"{path} has no config.json: save the model with save_pretrained")
    if not safetensors_files(path):
        raise ArtifactFileError(
            f"{path} has no .safetensors weights: save with save_pretrained(..., "
            f"safe_serialization=True) (pickled .bin weights are not loaded)"
        )


def read_config(path: Path) -> dict[str, Any]:
    """The artifact's ``config.json`` as a dict."""
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactFileError(f"{path / 'config.json'}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactFileError(f"{path / 'config.json'}: not a JSON object")
    return data


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part of a config (multimodal configs nest it as text_config)."""
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def context_length(config: Mapping[str, Any]) -> int | None:
    """The longest sequence the model was built for (``max_position_embeddings``)."""
    value = text_config(config).get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def safetensors_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def read_header(file: Path) -> dict[str, Any]:
    """The JSON header of one safetensors file."""
    try:
        with file.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > _MAX_HEADER:
                raise ArtifactFileError(f"{file}: header of {size} bytes; not a safetensors file")
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ArtifactFileError(f"{file}: not a readable safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise ArtifactFileError(f"{file}: the header is not a JSON object")
    return header


def summarise_weights(path: Path) -> WeightsSummary:
    """Parameters and bytes, per dtype, over all of the artifact's safetensors files."""
    files = safetensors_files(path)
    if not files:
        raise ArtifactFileError(f"{path} has no .safetensors files")
    dtypes: Counter[str] = Counter()
    weight_bytes = 0
    for file in files:
        for name, entry in read_header(file).items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            count = 1
            for dim in entry.get("shape", ()):
                count *= int(dim)
            dtypes[str(entry.get("dtype", "?"))] += count
            start, end = entry.get("data_offsets", (0, 0))
            weight_bytes += int(end) - int(start)
    return WeightsSummary(
        parameters=sum(dtypes.values()),
        weight_bytes=weight_bytes,
        dtypes=dict(dtypes),
        files=len(files),
    )
