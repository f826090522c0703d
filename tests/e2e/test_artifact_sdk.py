"""End to end: a saved transformers artifact served by a real ``tiergate serve`` subprocess,
asked through the official openai SDK, plain and streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from transformers import AutoTokenizer

from tests.e2e.conftest import API_KEY, Server, serving

PROMPT = "Tell me a long story about a dragon who learns to fly."

POLICY = """
version: 1
backends:
  art: {{type: artifact, path: "{path}", device: cpu}}
  art-int8: {{type: artifact, path: "{path}", quantize: int8}}
  eos: {{type: artifact, path: "{eos_path}"}}
tiers:
  - {{name: fp32, max_score: 0.3, backends: [art]}}
  - {{name: int8, max_score: 0.6, backends: [art-int8]}}
  - {{name: eos, backends: [eos]}}
routes:
  # No cache: every request reaches the model (a cached answer streams as one piece).
  auto: {{tier: fp32, fallback: none, cache: false}}
  quantized: {{tier: int8, fallback: none, cache: false}}
  ends: {{tier: eos, fallback: none, cache: false}}
"""


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, artifact_dir: Path, eos_artifact_dir: Path
) -> Iterator[Server]:
    policy = POLICY.format(path=artifact_dir, eos_path=eos_artifact_dir)
    with serving(tmp_path_factory.mktemp("e2e_artifact"), policy) as running:
        yield running


@pytest.fixture(scope="module")
def client(gateway: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=API_KEY, max_retries=0) as opened:
        yield opened


def ask(client: openai.OpenAI, route: str = "auto", **options: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "user", "content": PROMPT}], **options
    )


def test_plain_and_streamed_answers_agree(client: openai.OpenAI) -> None:
    """At temperature 0 with a seed, the streamed text joined equals the plain answer, and the
    stream's usage equals the plain usage."""
    raw = ask(client, max_tokens=16, temperature=0, seed=11)
    plain = raw.parse()
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=16,
        temperature=0,
        seed=11,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = next(c.usage for c in chunks if c.usage is not None)

    assert raw.headers["x-tiergate-backend"] == "art"
    assert plain.choices[0].message.content
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert finishes == ["length"]
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert usage.completion_tokens == plain.usage.completion_tokens == 16


def test_usage_is_counted_with_the_models_tokenizer(
    client: openai.OpenAI, artifact_dir: Path
) -> None:
    """prompt_tokens is the chat-templated prompt in the artifact's own tokenizer; max_tokens
    caps the answer with finish_reason "length"."""
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir, local_files_only=True)
    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    expected = len(tokenizer(templated, add_special_tokens=False)["input_ids"])

    completion = ask(client, max_tokens=5, temperature=0).parse()

    assert completion.usage.prompt_tokens == expected
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == expected + 5
    assert completion.choices[0].finish_reason == "length"
    assert completion.model == artifact_dir.name


def test_a_stop_string_truncates_the_answer(client: openai.OpenAI) -> None:
    """A stop string taken from the greedy answer ends the answer just before it."""
    whole = ask(client, max_tokens=24, temperature=0).parse().choices[0].message.content
    stop = whole[8:11]

    cut = ask(client, max_tokens=24, temperature=0, stop=[stop]).parse()

    assert cut.choices[0].message.content == whole[: whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 24


def test_eos_stops_early(client: openai.OpenAI) -> None:
    """The model whose likeliest token is EOS answers nothing, with "stop", under max_tokens."""
    completion = ask(client, "ends", max_tokens=20, temperature=0).parse()

    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 0
    assert not completion.choices[0].message.content


def test_the_int8_variant_answers_through_the_gateway(client: openai.OpenAI) -> None:
    """quantize: int8 serves the same artifact, with the same token counting."""
    raw = ask(client, "quantized", max_tokens=6, temperature=0, seed=1)
    completion = raw.parse()

    assert raw.headers["x-tiergate-backend"] == "art-int8"
    assert completion.usage.completion_tokens == 6
    assert completion.choices[0].message.content
