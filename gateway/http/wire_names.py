"""The names of a request's fields in an API's own words.

The pipeline names what it refuses as chat completions does (``messages``, ``max_tokens``,
``response_format``). An edge whose API calls them otherwise renames them in the refusal, its
``param`` and its message alike, so its client is told about the field it actually sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.errors import GatewayError

# OpenAI's Responses API: the conversation is ``input``, the output cap ``max_output_tokens``,
# the output format ``text.format``.
RESPONSES: Mapping[str, str] = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
}
# Anthropic's Messages API: structured output is ``output_config.format``.
MESSAGES: Mapping[str, str] = {"response_format": "output_config.format"}
# The legacy completions API: the conversation is a ``prompt``.
COMPLETIONS: Mapping[str, str] = {"messages": "prompt"}


def in_words_of(error: GatewayError, names: Mapping[str, str]) -> GatewayError:
    """``error`` with each chat field of ``names`` renamed (a dotted name such as the policy's
    ``limits.max_tokens`` is another thing and stays)."""
    if not names:
        return error
    word = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r")(?![\w])")
    error.message = word.sub(lambda m: names[m.group(1)], error.message)
    error.args = (error.message,)
    if error.param is not None:
        error.param = names.get(error.param, error.param)
    return error
