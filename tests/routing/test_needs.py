"""The capability filter: a request only reaches backends that can serve it, and its needs may
raise its tier but never lower it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from adapters.base import Backend, ChatRequest, ImagePart, Message, ResponseFormat, Tool, ToolChoice
from adapters.capabilities import Capabilities, declared, defaults_for, effective
from gateway.errors import BadRequest
from gateway.policy import Policy, parse_policy
from gateway.routing.needs import needs_of
from gateway.routing.plan import Plan, make_plan

POLICY = """
version: 1
backends:
  tiny: {type: tiny, model: default, n_ctx: 2048}
  local: {type: ollama, model: llama3.2, num_ctx: 8192, capabilities: {vision: false}}
  local_vision:
    type: ollama
    model: llava
    num_ctx: 4096
    capabilities: {vision: true, tools: false}
  remote: {type: remote, model: openai/gpt-4o-mini, capabilities: {context_window: 128000}}
tiers:
  - {name: tiny, max_score: 0.3, backends: [tiny]}
  - {name: local, max_score: 0.7, backends: [local, local_vision]}
  - {name: strong, backends: [remote]}
routes:
  auto: {}
  cheap: {tier: tiny, fallback: none}
  local_only: {tiers: [tiny, local]}
"""

TOOL = Tool(name="get_weather", parameters={"type": "object", "properties": {}})
HI = (Message(role="user", content="Say hi to Anna."),)


def policy() -> Policy:
    return parse_policy(POLICY.encode(), source="p.yaml", base_dir=Path("."))


def plan_for(request: ChatRequest, model: str | None = None, *, stream: bool = False) -> Plan:
    loaded = policy()

    def lookup(name: str) -> Capabilities:
        return declared(loaded.backends[name])

    return make_plan(loaded, lookup, request, model, stream=stream)


def backends(request: ChatRequest, model: str | None = None) -> list[str]:
    return [c.backend for c in plan_for(request, model).decision.candidates]


def test_plain_request_keeps_the_scored_tier() -> None:
    """Without special needs the filter changes nothing: an easy prompt stays on tiny."""
    plan = plan_for(ChatRequest(messages=HI))
    assert plan.decision.tier == "tiny"
    assert plan.excluded == ()
    assert plan.needs.names() == ()


def test_tools_skip_the_tiny_tier_and_tool_less_backends() -> None:
    """Tools move an easy request up to the first tier with a tool-capable backend."""
    plan = plan_for(ChatRequest(messages=HI, tools=(TOOL,)))
    assert plan.decision.tier == "local"
    assert [c.backend for c in plan.decision.candidates] == ["local", "remote"]
    assert "tiny: lacks tools" in plan.excluded
    assert "local_vision: lacks tools" in plan.excluded
    assert any("moved up to tier 'local'" in r for r in plan.decision.reasons)
    assert plan.labels == ("tools",)


def test_tool_choice_none_needs_no_tools() -> None:
    """`tool_choice: none` means the tools will not be called: any backend will do."""
    request = ChatRequest(messages=HI, tools=(TOOL,), tool_choice=ToolChoice(mode="none"))
    assert not needs_of(request).tools
    assert plan_for(request).decision.tier == "tiny"


def test_tool_history_needs_tools_without_tools() -> None:
    """A conversation holding a tool result can only go where tool turns are understood."""
    messages = (*HI, Message(role="tool", content="18C", tool_call_id="call_1"))
    assert needs_of(ChatRequest(messages=messages)).tools


def test_images_go_to_vision_backends_only() -> None:
    request = ChatRequest(
        messages=(Message(role="user", content="what is it?", images=(ImagePart("data:x"),)),)
    )
    names = backends(request)
    assert names[0] == "local_vision"
    assert "local" not in names
    assert "tiny" not in names


def test_json_mode_skips_tiny_but_not_ollama() -> None:
    request = ChatRequest(messages=HI, response_format=ResponseFormat(type="json_object"))
    plan = plan_for(request)
    assert plan.decision.tier == "local"
    assert plan.needs.json_mode
    assert "tiny: lacks json_mode" in plan.excluded


def test_needs_never_lower_the_tier() -> None:
    """A hard prompt scored into the strong tier stays there even though cheaper tiers could
    serve its tools: the score may raise the tier, needs only set the floor."""
    hard = (
        "Implement a Python function that solves x^2 + 3x - 10 = 0, prove step by step why it "
        "is correct, then compare its complexity with Newton's method.\n1. code\n2. proof"
    )
    request = ChatRequest(messages=(Message(role="user", content=hard),), tools=(TOOL,))
    plan = plan_for(request)
    assert plan.decision.tier == "strong"
    assert plan.decision.candidates[0].backend == "remote"


def test_a_fixed_tier_route_moves_up_even_without_fallback() -> None:
    plan = plan_for(ChatRequest(messages=HI, tools=(TOOL,)), "cheap")
    assert plan.decision.tier == "local"
    assert [c.backend for c in plan.decision.candidates] == ["local"]


def test_long_prompt_skips_small_windows() -> None:
    long = " ".join(f"word{i}" for i in range(3000))
    plan = plan_for(ChatRequest(messages=(Message(role="user", content=long),)), "cheap")
    assert plan.decision.tier == "local"
    assert plan.long_context
    assert "long_context" in plan.labels
    assert any(e.startswith("tiny: context window 2048") for e in plan.excluded)


def test_no_capable_backend_is_a_400_naming_param_and_backends() -> None:
    """Nothing in the route supports images and tools together: the 400 names `tools` (the
    capability most backends lacked) and every backend considered, with why."""
    request = ChatRequest(
        messages=(Message(role="user", content="?", images=(ImagePart("data:x"),)),),
        tools=(TOOL,),
    )
    with pytest.raises(BadRequest) as refused:
        plan_for(request, "local_only")
    error = refused.value
    assert error.code == "capability_unavailable"
    assert error.param == "tools"
    for name in ("tiny", "local", "local_vision"):
        assert f"{name}: lacks" in error.message


def test_pinned_backend_without_the_capability_is_refused() -> None:
    with pytest.raises(BadRequest) as refused:
        plan_for(ChatRequest(messages=HI, tools=(TOOL,)), "tiny")
    assert refused.value.param == "tools"
    assert "tiny: lacks tools" in refused.value.message


def test_max_tokens_above_a_backends_output_limit() -> None:
    loaded = policy()

    def lookup(name: str) -> Capabilities:
        caps = declared(loaded.backends[name])
        return Capabilities(max_output_tokens=100) if name == "tiny" else caps

    plan = make_plan(loaded, lookup, ChatRequest(messages=HI, max_tokens=500), None)
    assert plan.decision.tier == "local"
    assert any("maximum output of 100" in e for e in plan.excluded)


def test_policy_overrides_adapter_defaults() -> None:
    """`capabilities:` in the policy replaces the adapter type's defaults field by field."""
    loaded = policy()
    assert declared(loaded.backends["local"]).tools
    assert not declared(loaded.backends["local_vision"]).tools
    assert declared(loaded.backends["local_vision"]).vision
    assert declared(loaded.backends["local_vision"]).context_window == 4096
    assert not declared(loaded.backends["tiny"]).tools
    assert declared(loaded.backends["remote"]).context_window == 128000


def test_live_knowledge_then_policy_overrides() -> None:
    """A backend's own knowledge (its capabilities, or its context window) replaces the type's
    defaults; the policy's `capabilities:` replaces both."""
    loaded = policy()

    @dataclass(frozen=True)
    class Knows:
        """The two things a backend reports about itself (the rest of the contract unused)."""

        capabilities: Capabilities
        context_window: int | None

    def backend(capabilities: Capabilities, window: int | None) -> Backend:
        return cast(Backend, Knows(capabilities, window))

    tiny = loaded.backends["tiny"]
    # A report that leaves the window open takes the backend's own (say the tiny model's n_ctx
    # capped by its GGUF) over the type's default.
    opened = dataclasses.replace(defaults_for(tiny), context_window=None)
    assert defaults_for(tiny).context_window == 2048
    assert effective(backend(opened, 1024), tiny).context_window == 1024
    reporting = backend(Capabilities(vision=True, context_window=None), 4096)
    reported = effective(reporting, loaded.backends["local"])
    assert reported.vision is False  # the policy says vision: false for `local`
    assert reported.context_window == 4096
    assert not reported.tools  # reported, not the ollama defaults
    remote_config = loaded.backends["remote"]
    remote = effective(backend(defaults_for(remote_config), None), remote_config)
    assert remote.context_window == 128000


def test_images_and_tools_count_toward_the_context_window() -> None:
    """Five high-detail images are 5 × 765 = 3,825 prompt tokens besides the text: with 600
    max_tokens they overflow local_vision's 4,096 window although the text is a few tokens;
    in low detail (5 × 85) they fit."""
    from gateway.scoring.request_tokens import IMAGE_TOKENS_HIGH, extra_prompt_tokens

    def request(detail: str | None) -> ChatRequest:
        images = tuple(ImagePart(url="https://example.com/a.png", detail=detail) for _ in range(5))
        turn = Message(role="user", content="What is in these pictures?", images=images)
        return ChatRequest(messages=(turn,), max_tokens=600)

    high = request(None)
    assert extra_prompt_tokens(high) == 5 * IMAGE_TOKENS_HIGH == 3825
    with pytest.raises(BadRequest, match="context window 4096 < ~3831 prompt tokens"):
        plan_for(high, "local_vision")
    assert [c.backend for c in plan_for(request("low"), "local_vision").decision.candidates] == [
        "local_vision"
    ]
    # A tool's schema is prompt too: its JSON's tokens are counted.
    big = Tool(
        name="lookup",
        description="Look a word up. " * 400,
        parameters={"type": "object", "properties": {"word": {"type": "string"}}},
    )
    assert extra_prompt_tokens(ChatRequest(messages=HI, tools=(big,))) > 1600


@pytest.mark.parametrize(
    "choice", [ToolChoice(mode="required"), ToolChoice(mode="function", name="get_weather")]
)
def test_a_forced_tool_choice_skips_backends_that_cannot_enforce_it(choice: ToolChoice) -> None:
    """Ollama has no tool_choice: a request that must call a tool (or a named one) goes to a
    backend that enforces it; with "auto" Ollama is fine."""
    forced = plan_for(ChatRequest(messages=HI, tools=(TOOL,), tool_choice=choice))
    assert [c.backend for c in forced.decision.candidates] == ["remote"]
    assert "local: lacks tool_choice" in forced.excluded
    assert forced.needs.names() == ("tools", "tool_choice")
    auto = plan_for(ChatRequest(messages=HI, tools=(TOOL,), tool_choice=ToolChoice(mode="auto")))
    assert [c.backend for c in auto.decision.candidates] == ["local", "remote"]
    with pytest.raises(BadRequest) as refused:
        plan_for(ChatRequest(messages=HI, tools=(TOOL,), tool_choice=choice), "local")
    assert refused.value.param == "tool_choice"
