"""Everything around generation: the optional extra, the policy's options, the directory's
files (read without torch), and the incremental decoder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from safetensors import safe_open

from adapters.artifact.decode import IncrementalDecoder
from adapters.artifact.files import ArtifactFileError, require_directory, summarise_weights
from adapters.capabilities import declared
from adapters.config import ArtifactConfig

INSTALL = "pip install 'tiergate[torch]'"


def test_without_the_extra_a_policy_fails_to_load_with_the_install_command(
    artifact_dir: Path, tmp_path: Path
) -> None:
    """With torch unimportable, a policy naming type artifact is refused with the pip command,
    and the backend, if built anyway, answers with the same error instead of an ImportError."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""
            version: 1
            backends:
              art: {{type: artifact, path: {artifact_dir}}}
            tiers:
              - {{name: local, backends: [art]}}
            routes:
              auto: {{}}
            """
        )
    )
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["torch"] = None  # what an environment without the extra looks like
        from pathlib import Path
        from adapters.artifact.backend import ArtifactBackend
        from adapters.chat import ChatRequest
        from adapters.config import ArtifactConfig
        from adapters.errors import BackendUnavailable
        from gateway.policy import PolicyError, load_policy
        try:
            load_policy(Path({str(policy)!r}))
        except PolicyError as exc:
            print("POLICY:", exc)
        config = ArtifactConfig(type="artifact", path={str(artifact_dir)!r})
        backend = ArtifactBackend("art", config)
        try:
            asyncio.run(backend.acomplete(ChatRequest.from_prompt("hi", max_tokens=2)))
        except BackendUnavailable as exc:
            print("REQUEST:", exc.message)
        print("HEALTH:", asyncio.run(backend.health()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if ":" in line}
    assert "backends.art.type" in lines["POLICY"]
    for key in ("POLICY", "REQUEST", "HEALTH"):
        assert INSTALL in lines[key], result.stdout
    assert "ok=False" in lines["HEALTH"]


def test_int8_on_a_gpu_is_a_config_error_that_says_what_to_set() -> None:
    """int8 is CPU-only: naming cuda or mps with it fails validation with the fix."""
    with pytest.raises(ValidationError) as caught:
        ArtifactConfig(type="artifact", path="m", device="cuda", quantize="int8")
    assert "device: cpu" in str(caught.value)
    with pytest.raises(ValidationError) as half:
        ArtifactConfig(type="artifact", path="m", dtype="float16", quantize="int8")
    assert "dtype: float32" in str(half.value)


def test_unknown_options_are_refused() -> None:
    """A misspelt option or value is an error, never silently ignored."""
    with pytest.raises(ValidationError):
        ArtifactConfig.model_validate({"type": "artifact", "path": "m", "quantise": "int8"})
    with pytest.raises(ValidationError):
        ArtifactConfig.model_validate({"type": "artifact", "path": "m", "device": "tpu"})


def test_declared_capabilities_take_the_window_from_config_json(artifact_dir: Path) -> None:
    """Chat and streaming only; the context window is max_position_embeddings."""
    caps = declared(ArtifactConfig(type="artifact", path=str(artifact_dir)))
    assert caps.context_window == 512
    assert caps.chat
    assert caps.streaming
    assert [name for name in caps.names() if name not in ("chat", "streaming")] == []


def test_weights_are_summarised_from_the_safetensors_headers(artifact_dir: Path) -> None:
    """Parameters and bytes from the headers equal what the tensors in the file hold."""
    summary = summarise_weights(artifact_dir)

    total = 0
    with safe_open(artifact_dir / "model.safetensors", framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            total += handle.get_tensor(name).numel()
    assert summary.parameters == total
    assert summary.weight_bytes == 4 * total
    assert summary.main_dtype == "F32"
    config = json.loads((artifact_dir / "config.json").read_text())
    assert summary.parameters > config["vocab_size"] * config["hidden_size"] * 2


def test_a_directory_without_weights_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArtifactFileError, match="safe_serialization"):
        require_directory(tmp_path)


def test_incremental_decoding_joins_to_the_whole_decode() -> None:
    """Characters split over tokens are held back until whole; the pieces join to the full text."""
    pieces = {1: b"h", 2: "é".encode()[:1], 3: "é".encode()[1:], 4: b" ok"}

    def decode(ids: object) -> str:
        return b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")  # type: ignore[attr-defined]

    decoder = IncrementalDecoder(decode)
    out = [decoder.add(token) for token in (1, 2, 3, 4)]

    assert out == ["h", "", "é", " ok"]
    assert decoder.flush() == ""


def test_an_incomplete_character_at_the_end_is_flushed() -> None:
    decoder = IncrementalDecoder(lambda ids: "a\ufffd" if len(ids) else "")
    assert decoder.add(7) == ""
    assert decoder.flush() == "a\ufffd"


def test_torch_loads_only_for_a_policy_that_uses_the_type() -> None:
    """Building the app's policy and backends for a policy without an artifact backend, and
    checking one with it, imports neither torch nor transformers."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from adapters import load_backend
        from gateway.policy import load_policy
        policy = load_policy(Path("policies/default.yaml"))
        backends = [load_backend(name, config) for name, config in policy.backends.items()]
        from adapters.artifact.backend import ArtifactBackend
        from adapters.config import ArtifactConfig
        ArtifactBackend("art", ArtifactConfig(type="artifact", path="somewhere"))
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_policy_with_int8_on_cuda_names_the_backend_and_the_fix(tmp_path: Path) -> None:
    from gateway.policy import PolicyError, parse_policy

    policy = b"""
version: 1
backends:
  art: {type: artifact, path: m, device: cuda, quantize: int8}
tiers:
  - {name: local, backends: [art]}
routes:
  auto: {}
"""
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy, source="p.yaml", base_dir=tmp_path)
    assert "p.yaml: backends.art:" in str(caught.value)
    assert "set `device: cpu`" in str(caught.value)


def test_an_artifact_is_priced_as_a_local_backend() -> None:
    """Without a price in the policy, its time is charged at the local_default hardware."""
    from gateway.policy.pricing import rule_for
    from gateway.policy.schema import PricingSpec

    rule = rule_for("art", ArtifactConfig(type="artifact", path="m"), PricingSpec())
    assert getattr(rule, "source", None) == "default-hardware"
