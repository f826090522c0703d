"""JSON mode for the tiny adapter by grammar-constrained decoding: llama.cpp only samples
tokens that keep the text valid JSON (any object, or one matching the request's schema)."""

from __future__ import annotations

from typing import Any

from adapters.chat import ChatRequest
from adapters.tiny.errors import GrammarRefused
from adapters.tiny.wire import json_schema_text


def grammar_for(request: ChatRequest) -> Any:
    """The llama.cpp grammar of the request's ``response_format``, or ``None``."""
    fmt = request.response_format
    if fmt is None:
        return None
    from llama_cpp import llama_grammar

    try:
        if fmt.type == "json_object":
            return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
        return llama_grammar.LlamaGrammar.from_json_schema(json_schema_text(fmt), verbose=False)
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise GrammarRefused from exc
