"""Build a small random-weight Llama-style Hugging Face artifact, entirely offline.

Nothing can be downloaded here (no hub, no pretrained tokenizer), so the artifact is made from
scratch: a byte-level BPE tokenizer trained on a few sentences with the ``tokenizers`` library,
wrapped in ``PreTrainedTokenizerFast`` with a ChatML-style Jinja chat template and an EOS token,
and a ``LlamaForCausalLM`` with random weights, both written with ``save_pretrained`` (config,
safetensors weights, tokenizer, chat template): exactly what the ``artifact`` backend serves.

The tests build a ~0.1M-parameter one per session; ``bench/make_artifact.py`` builds a ~25M
one to measure what int8 costs. Its answers are gibberish; its speed, memory and drift are
real. Needs the ``torch`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EOS = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS, "<|im_start|>", "<|pad|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEFAULT_CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Name three colours of the rainbow: red, orange and violet.",
    "Tell me a long story about a dragon who learns to fly over the sea.",
    "A lighthouse keeper writes a short poem every night.",
    "Explain in a few sentences why the sky is blue.",
    "The water cycle: evaporation, condensation, precipitation and collection.",
    "Hello! How are you today? I am fine, thank you.",
    "Count from one to ten: one two three four five six seven eight nine ten.",
)


@dataclass(frozen=True, slots=True)
class ArtifactShape:
    """The model's size. ``vocab_size`` is the BPE target (the trained vocabulary may be
    smaller when the corpus runs out of pairs; the model takes the tokenizer's real size)."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    context: int = 512
    vocab_size: int = 400
    seed: int = 0
    # True: every step's most likely token is EOS (for tests of stopping at EOS).
    eos_first: bool = False


def build_tokenizer(corpus: Sequence[str], vocab_size: int) -> object:
    """A byte-level BPE tokenizer trained on ``corpus``, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token=EOS,
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_random_artifact(
    path: Path, shape: ArtifactShape = ArtifactShape(), corpus: Sequence[str] = DEFAULT_CORPUS
) -> Path:
    """Write a random-weight Llama artifact (config, safetensors, tokenizer) to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(corpus, shape.vocab_size)
    vocab = len(tokenizer)  # type: ignore[arg-type]
    eos_id = int(tokenizer.eos_token_id)  # type: ignore[attr-defined]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.context,
        eos_token_id=eos_id,
        bos_token_id=None,
        pad_token_id=int(tokenizer.pad_token_id),  # type: ignore[attr-defined]
        tie_word_embeddings=False,
        mlp_bias=shape.eos_first,
    )
    torch.manual_seed(shape.seed)
    model: Any = LlamaForCausalLM(config)
    model.eval()
    with torch.no_grad():
        head = model.lm_head.weight
        if shape.eos_first:
            # A large constant on hidden dimension 0 after the last layer survives the final
            # RMSNorm; only EOS's output row reads that dimension, so EOS is always the argmax.
            model.model.layers[-1].mlp.down_proj.bias[0] = 100.0
            head[:, 0] = 0.0
            head[eos_id, 0] = 1.0
        else:
            head[eos_id] = 0.0  # EOS's logit is 0: below the best random logit, every step
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
    return path
