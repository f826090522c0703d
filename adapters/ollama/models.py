"""What an Ollama server says about its models: the list of ``GET /api/tags`` and one model's
details from ``POST /api/show``, read into names and ``Capabilities``. Pure, like ``wire``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from adapters.capabilities import Capabilities
from adapters.ollama.errors import MalformedReply


def model_names(data: object) -> list[str]:
    """The model names ``/api/tags`` lists."""
    items = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise MalformedReply("the model list has no `models` list")
    names = ((item.get("model") or item.get("name")) for item in items if isinstance(item, Mapping))
    return [name for name in names if isinstance(name, str) and name]


def listed(model: str, names: Sequence[str]) -> bool:
    """Whether ``/api/tags`` lists ``model``, allowing for the implied ``:latest`` tag."""
    wanted = {model}
    if ":" not in model.rsplit("/", 1)[-1]:
        wanted.add(f"{model}:latest")
    return any(name in wanted for name in names)


# --- capabilities -----------------------------------------------------------------------------


def capabilities_from_show(
    shown: object, base: Capabilities, *, num_ctx: int | None
) -> Capabilities:
    """Capabilities from ``/api/show``: its ``capabilities`` list (``completion``, ``tools``,
    ``vision``, ``embedding``, ...; servers before 0.6.4 send none, which keeps ``base``) and
    the configured ``num_ctx`` (what the server loads), capped by the model's trained context
    length (``<arch>.context_length`` in ``model_info``)."""
    if not isinstance(shown, Mapping):
        raise MalformedReply("the model information is not a JSON object")
    listed_caps = shown.get("capabilities")
    caps = base
    if isinstance(listed_caps, list) and listed_caps:
        names = set(listed_caps)
        tools = "tools" in names
        caps = replace(
            base,
            chat="completion" in names,
            tools=tools,
            parallel_tool_calls=tools,
            vision="vision" in names,
            embeddings="embedding" in names,
            json_mode="completion" in names,
            json_schema="completion" in names,
        )
    info = shown.get("model_info")
    trained = next(
        (
            v
            for k, v in (info.items() if isinstance(info, Mapping) else ())
            if isinstance(k, str)
            and k.endswith(".context_length")
            and isinstance(v, int)
            and not isinstance(v, bool)
            and v > 0
        ),
        None,
    )
    # Without num_ctx Ollama loads a model with its own default window (2048-4096 tokens,
    # depending on the version), far below the trained length: then the window stays unknown.
    window = num_ctx if trained is None or num_ctx is None else min(num_ctx, trained)
    return replace(caps, context_window=window)


def thinks_from_show(shown: object) -> bool:
    """Whether ``/api/show`` lists ``thinking`` among the model's capabilities (a model that
    can think takes ``think``; Ollama refuses it for any other)."""
    listed_caps = shown.get("capabilities") if isinstance(shown, Mapping) else None
    return isinstance(listed_caps, list) and "thinking" in listed_caps
