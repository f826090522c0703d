"""The policy's ``timeouts:`` as one whole: a try's time fits in the request's.

``per_try_s`` bounds one try and ``total_s`` every try together, so a ``per_try_s`` above
``total_s`` could never be used: it is refused when the policy loads, naming both. Left unset,
``per_try_s`` is its default (30 s) or ``total_s`` when that is shorter, so a policy that only
shortens ``total_s`` stays valid (and the extra choices of ``n`` are bounded by it too).
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.policy.schema import TimeoutSpec


def timeout_problems(spec: TimeoutSpec) -> Iterator[tuple[str, str]]:
    """(path, message) when the policy sets ``per_try_s`` above ``total_s``."""
    if "per_try_s" in spec.model_fields_set and spec.per_try_s > spec.total_s:
        yield (
            "timeouts.per_try_s",
            f"{spec.per_try_s:g} s is longer than timeouts.total_s ({spec.total_s:g} s, the "
            f"deadline of all tries together), so no try could ever use it: lower per_try_s "
            f"to {spec.total_s:g} or less, or raise total_s",
        )


def effective_timeouts(spec: TimeoutSpec) -> TimeoutSpec:
    """``spec`` with an unset ``per_try_s`` no longer than ``total_s``."""
    if "per_try_s" in spec.model_fields_set or spec.per_try_s <= spec.total_s:
        return spec
    return spec.model_copy(update={"per_try_s": spec.total_s})
