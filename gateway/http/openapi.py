"""The OpenAPI schema, with the hot routes in it. They are plain Starlette routes (they parse
their own body; FastAPI's per-request machinery would cost time on every request), which
FastAPI's generator leaves out: their request bodies are added here from the same pydantic
models that parse them, so schema-driven clients and fuzzers reach every public route."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from gateway.http.anthropic_in import CountTokensIn, MessagesIn
from gateway.http.openai_in import ChatCompletionIn, CompletionIn, EmbeddingIn
from gateway.http.responses_in import ResponsesIn

REF = "#/components/schemas/{model}"
HOT_BODIES: dict[str, tuple[type[BaseModel], str]] = {
    "/v1/chat/completions": (ChatCompletionIn, "A chat completion (OpenAI's wire format)"),
    "/v1/completions": (CompletionIn, "A text completion (OpenAI's legacy wire format)"),
    "/v1/embeddings": (EmbeddingIn, "Embeddings (OpenAI's wire format)"),
    "/v1/messages": (MessagesIn, "A message (Anthropic's Messages wire format)"),
    "/v1/messages/count_tokens": (CountTokensIn, "Count a message's input tokens (Anthropic's)"),
    "/v1/responses": (ResponsesIn, "A response (OpenAI's Responses wire format, stateless)"),
}


def _operation(model: type[BaseModel], summary: str) -> dict[str, Any]:
    error = {"description": "An OpenAI-style error body naming the field or the cause"}
    return {
        "summary": summary,
        "operationId": model.__name__,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        },
        "responses": {
            "200": {
                "description": "The answer: JSON, or server-sent events when `stream` is true",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            "400": error,
            "401": error,
            "413": error,
            "429": error,
            "502": error,
            "503": error,
            "504": error,
        },
    }


def openapi_with_hot_routes(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for path, (model, summary) in HOT_BODIES.items():
                model_schema = model.model_json_schema(ref_template=REF)
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
                schema.setdefault("paths", {})[path] = {"post": _operation(model, summary)}
            app.openapi_schema = schema
        return app.openapi_schema

    return build
