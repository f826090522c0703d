"""Sticky split assignment: the share matches the policy, and a key's arm is the same in every
process (no dependence on PYTHONHASHSEED)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gateway.canary.assign import bucket, in_candidate, sticky_key
from gateway.policy.canary import StickySpec

KEYS = [f"user-{i}" for i in range(10_000)]


@pytest.mark.parametrize("percent", [1.0, 5.0, 10.0, 25.0, 50.0, 90.0])
def test_share_is_within_one_point_over_10000_keys(percent: float) -> None:
    """The share of 10,000 keys in the candidate arm is within ±1 percentage point."""
    share = 100.0 * sum(in_candidate("canary-a", key, percent) for key in KEYS) / len(KEYS)
    assert abs(share - percent) <= 1.0, share


def test_zero_and_hundred_percent_are_exact() -> None:
    """0 % sends no key to the candidate, 100 % every key."""
    assert not any(in_candidate("c", key, 0.0) for key in KEYS[:1000])
    assert all(in_candidate("c", key, 100.0) for key in KEYS[:1000])


def test_a_new_canary_name_reshuffles_the_keys() -> None:
    """Two canaries at 10 % pick mostly different keys (the name is part of the hash)."""
    first = {k for k in KEYS if in_candidate("canary-a", k, 10.0)}
    second = {k for k in KEYS if in_candidate("canary-b", k, 10.0)}
    assert len(first & second) < 0.3 * len(first)


_CHILD = (
    "import json; from gateway.canary.assign import bucket; "
    "print(json.dumps([bucket('canary-a', f'user-{i}') for i in range(300)]))"
)


def _buckets_in_a_process(seed: str) -> list[float]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    result: list[float] = json.loads(done.stdout)
    return result


def test_processes_with_different_hash_seeds_agree() -> None:
    """Fresh interpreters with different PYTHONHASHSEEDs (a restart, another replica) put every
    key in the same place as this process."""
    here = [bucket("canary-a", f"user-{i}") for i in range(300)]
    assert _buckets_in_a_process("1") == here
    assert _buckets_in_a_process("4242") == here


def test_sticky_key_sources() -> None:
    """The key comes from the configured source, falling back to the API key id."""
    headers = {"x-team": "blue"}
    by_user, by_header = StickySpec(by="user"), StickySpec(by="header", header="X-Team")
    assert sticky_key(StickySpec(), key_id="k1", user="u", headers=headers) == "key:k1"
    assert sticky_key(by_user, key_id="k1", user="u", headers=headers) == "user:u"
    assert sticky_key(by_user, key_id="k1", user=None, headers=headers) == "key:k1"
    assert sticky_key(by_header, key_id="k1", user="u", headers=headers) == "header:blue"
    assert sticky_key(by_header, key_id="k1", user="u", headers={}) == "key:k1"
