"""Token log-probabilities for the tiny adapter, without ``logits_all``.

llama-cpp-python computes ``logprobs`` only with ``Llama(logits_all=True)``, which keeps a row of
logits per context position (n_ctx × vocabulary floats: 2048 × 49,152 × 4 B = 400 MB for
SmolLM2) and makes every prompt token's logits be computed. ``Llama.generate`` yields each token
right after sampling it from the context's last logits, which llama.cpp still holds at that
moment; the log-softmax of that one row gives the chosen token's log-prob (and the top
alternatives) for ~0.1 ms a token, with no extra memory.

The log-probs are those of the model's distribution before sampling settings (temperature,
top-k/p) reshape it, as OpenAI reports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TokenLogprobs:
    """Collects the generated tokens' log-probs, OpenAI-shaped."""

    def __init__(self, llm: Any, top: int | None) -> None:
        import llama_cpp

        self._llm = llm
        self._ctx = llm._ctx.ctx
        self._get = llama_cpp.llama_get_logits_ith
        self._vocab = llm.n_vocab()
        self._top = max(0, min(top or 0, 20))
        self.content: list[dict[str, Any]] = []

    def add(self, token: int) -> None:
        """Note ``token``, just sampled from the context's last logits (call before the next
        token is decoded)."""
        row = np.ctypeslib.as_array(self._get(self._ctx, -1), shape=(self._vocab,))
        peak = float(row.max())
        norm = peak + float(np.log(np.exp(row - peak, dtype=np.float64).sum()))
        entry = self._entry(token, float(row[token]) - norm)
        alternatives: list[dict[str, Any]] = []
        if self._top:
            best = np.argpartition(row, -self._top)[-self._top :]
            for other in sorted(best.tolist(), key=lambda t: -float(row[t])):
                alternatives.append(self._entry(int(other), float(row[other]) - norm))
        entry["top_logprobs"] = alternatives
        self.content.append(entry)

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        raw: bytes = self._llm.detokenize([token])
        return {
            "token": raw.decode("utf-8", "replace"),
            "logprob": logprob,
            "bytes": list(raw),
        }

    def openai(self) -> dict[str, Any]:
        """The ``logprobs`` object of a chat completion choice."""
        return {"content": self.content, "refusal": None}
