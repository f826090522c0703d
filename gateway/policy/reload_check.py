"""What a reload may not do that a start may: turn off a backend that serves now because the new
file names a key variable the gateway's environment does not have.

At start a backend whose ``api_key_env`` is unset is only disabled (the default policy's remote
tier without ``OPENAI_API_KEY``). On a reload the environment cannot have changed (it changes
with a restart), so a backend that serves now and would be disabled by the new file is a
mistake in the file (a misspelt or renamed variable): the reload is refused, naming it, and the
running policy keeps serving. So is one that leaves a tier serving now with no backend that has
its key (the backend renamed along with its variable: a new name, so not "serving now" above).
"""

from __future__ import annotations

import os
from pathlib import Path

from adapters.config import BackendConfig, OpenAICompatConfig, RemoteConfig
from gateway.policy.lines import with_lines
from gateway.policy.model import Policy
from gateway.policy.problems import PolicyError, Problem


def unset_key_variable(config: BackendConfig) -> str | None:
    """The name of the variable ``config`` takes its key from, when the environment lacks it
    (the backend is disabled); None when it has it or needs none."""
    if not isinstance(config, RemoteConfig | OpenAICompatConfig) or not config.api_key_env:
        return None
    return None if os.environ.get(config.api_key_env) else config.api_key_env


def _serves(policy: Policy, name: str) -> bool:
    """Whether ``policy``'s backend ``name`` has its key (or needs none) in this environment."""
    config = policy.backends.get(name)
    return config is not None and unset_key_variable(config) is None


def check_reload(new: Policy, running: Policy) -> None:
    """Raise ``PolicyError`` for each backend ``running`` serves with its key that ``new``
    would disable, and for each tier serving now that ``new`` leaves with no backend that has
    its key (the backend renamed, its variable too: the rename hides it from the first check).
    """
    problems: list[Problem] = []
    for name, config in new.backends.items():
        missing = unset_key_variable(config)
        before = running.backends.get(name)
        if missing is None or before is None or unset_key_variable(before) is not None:
            continue
        now = (
            f" (its key from {before.api_key_env})"
            if isinstance(before, RemoteConfig | OpenAICompatConfig) and before.api_key_env
            else ""
        )
        problems.append(
            Problem(
                f"backends.{name}.api_key_env",
                f"the environment variable {missing} is not set in the gateway, so this policy "
                f"would disable {name!r}, which serves now{now}; fix the name, or set {missing} "
                f"and restart the gateway (a reload does not read the environment again), or "
                f"remove the backend to stop using it",
            )
        )
    flagged = {p.path for p in problems}
    serving = {t.name for t in running.tiers if any(_serves(running, b) for b in t.backends)}
    for i, tier in enumerate(new.tiers):
        if tier.name not in serving or any(_serves(new, b) for b in tier.backends):
            continue
        if any(f"backends.{b}.api_key_env" in flagged for b in tier.backends):
            continue  # said above, by the backend's name
        unset = ", ".join(
            f"{b!r} ({variable} unset)"
            for b in tier.backends
            if (variable := unset_key_variable(new.backends[b])) is not None
        )
        problems.append(
            Problem(
                f"tiers[{i}].backends",
                f"tier {tier.name!r} serves now, but with this policy none of its backends "
                f"has its key: {unset}; fix the variable's name, or set it "
                f"and restart the gateway (a reload does not read the environment again)",
            )
        )
    if problems:
        try:
            data = Path(new.source).read_bytes()
        except OSError:
            data = b""
        raise PolicyError(new.source, with_lines(problems, data))
