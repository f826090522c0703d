"""The attempt's copy of a request carrying its trace context (gateway.routing.spans): the
same request ``dataclasses.replace`` makes, every other field kept."""

from __future__ import annotations

import dataclasses

import pytest

from adapters.base import ChatRequest, EmbeddingRequest, Message
from gateway.routing.spans import _COPIES, _with_headers

HEADERS = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)


def test_the_copy_is_what_dataclasses_replace_makes() -> None:
    chat = ChatRequest(
        messages=(Message(role="user", content="hi"),),
        max_tokens=5,
        temperature=0.5,
        top_p=0.9,
        top_k=3,
        stop=("x",),
        seed=7,
        user="u",
        n=2,
        trace_headers=(("traceparent", "old"),),
    )
    embed = EmbeddingRequest(inputs=("a", "b"), dimensions=8, user="u")
    for request in (chat, embed):
        copied = _COPIES[type(request)](request, HEADERS)
        assert type(copied) is type(request)
        assert copied == dataclasses.replace(request, trace_headers=HEADERS)
        assert request.trace_headers != HEADERS  # the original is left as it was


def test_a_class_it_cannot_copy_is_refused_at_import_time() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Moved:
        trace_headers: tuple[tuple[str, str], ...] = ()
        prompt: str = ""

    @dataclasses.dataclass(frozen=True, slots=True)
    class Two:
        inputs: tuple[str, ...]
        trace_headers: tuple[tuple[str, str], ...] = ()

    with pytest.raises(TypeError, match="trace_headers last"):
        _with_headers(Moved)  # type: ignore[type-var]
    two = Two(("a", "b"))
    assert _with_headers(Two)(two, HEADERS) == Two(("a", "b"), HEADERS)  # type: ignore[type-var]
