"""What the three replicas share: a policy reload reaches all of them, a canary decision taken
on one is followed by the others, the response cache and the prefix registry are one, a key
revoked on one is refused by all, and one rate limit holds across the three."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from gateway.policy import load_policy
from tests.cluster.local import Cluster, each_replica, report, until

REVOKE_WITHIN_S = 5.0  # README: a revoked key is refused everywhere within ~2 s


def chat(
    cluster: Cluster, n: int | None, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    """One chat completion, to replica ``n`` directly or (None) through HAProxy."""
    url = cluster.url if n is None else cluster.replica_url(n)
    headers = cluster.auth if key is None else {"authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def message(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **fields}


def policy_hash(cluster: Cluster, n: int) -> str:
    response = httpx.get(
        f"{cluster.replica_url(n)}/admin/policy", headers=cluster.admin, timeout=10
    )
    response.raise_for_status()
    return str(response.json()["hash"])


def replace_file(path: Path, text: str) -> None:
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text)
    os.replace(fresh, path)


@contextlib.contextmanager
def policy(cluster: Cluster, text: str) -> Iterator[dict[int, float]]:
    """The cluster's policy file replaced by ``text`` (each replica's watcher reloads it);
    yields the seconds each replica took to serve it; the original is put back after."""
    path = Path(cluster.env["POLICY"])
    original = path.read_text()
    replace_file(path, text)
    expected = load_policy(path).hash
    seconds = each_replica(cluster, lambda n: policy_hash(cluster, n) == expected, "the policy")
    try:
        yield seconds
    finally:
        replace_file(path, original)
        back = load_policy(path).hash
        each_replica(cluster, lambda n: policy_hash(cluster, n) == back, "the original policy")


def test_a_policy_reload_reaches_every_replica(healthy: Cluster) -> None:
    cluster = healthy
    text = Path(cluster.env["POLICY"]).read_text()
    changed = text.replace('"a short answer"', '"a short answer, reloaded"')
    assert changed != text
    with policy(cluster, changed) as seconds:
        replies = {
            n: chat(cluster, n, message("hello")).json()["choices"][0]["message"]["content"]
            for n in range(1, cluster.replicas + 1)
        }
    report("reload", {"seconds_to_reload": seconds, "replies": replies})
    assert set(replies.values()) == {"a short answer, reloaded"}


def test_a_canary_decision_on_one_replica_is_followed_by_the_others(healthy: Cluster) -> None:
    cluster = healthy
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    text = Path(cluster.env["POLICY"]).read_text()
    text = text.replace(
        "tiers:", '  cand: {type: fake, model: cand-model, script: [{reply: "candidate"}]}\ntiers:'
    )
    text += (
        f"canary: {{name: {name}, candidate: cand, tier: cheap, mode: split, percent: 100, "
        "evaluate_every_s: 0.5}\n"
    )
    n_all = range(1, cluster.replicas + 1)
    with policy(cluster, text):
        before = {
            n: chat(cluster, n, message("hello")).headers["x-tiergate-backend"] for n in n_all
        }
        assert set(before.values()) == {"cand"}, before
        decided = httpx.post(
            f"{cluster.replica_url(1)}/admin/canary/rollback",
            json={"reason": "cluster test"},
            headers=cluster.admin,
            timeout=10,
        )
        assert decided.status_code == 200, decided.text
        # Replica 1 applied it at once; the others follow at their next evaluation (0.5 s).
        seconds = each_replica(
            cluster,
            lambda n: chat(cluster, n, message("hello")).headers["x-tiergate-backend"] != "cand",
            "the rollback followed",
            within_s=10,
        )
        after = {n: chat(cluster, n, message("hello")).headers["x-tiergate-backend"] for n in n_all}
        states = {
            n: httpx.get(
                f"{cluster.replica_url(n)}/admin/canary", headers=cluster.admin, timeout=10
            ).json()["status"]
            for n in n_all
        }
    report(
        "canary",
        {"before": before, "after": after, "seconds_to_follow": seconds, "states": states},
    )
    assert "cand" not in after.values()
    assert set(states.values()) == {"rolled_back"}


def test_the_response_cache_is_shared(healthy: Cluster) -> None:
    cluster = healthy
    body = message(f"what is the capital of France? {uuid.uuid4()}", temperature=0)
    first = chat(cluster, 1, body)
    assert first.headers["x-tiergate-cache"] == "miss"
    seconds = each_replica(
        cluster,
        lambda n: chat(cluster, n, body).headers["x-tiergate-cache"] == "hit",
        "a cache hit",
        within_s=10,
        first=2,
    )
    report("cache", {"r1": "miss", "seconds_until_hit": seconds})


def test_the_prefix_registry_is_shared(healthy: Cluster) -> None:
    """A long system prompt served on replica 1 is warm, for replicas 2 and 3, on the same
    backend."""
    cluster = healthy
    topic = uuid.uuid4().hex[:8]
    system = " ".join(
        f"You are the {topic} assistant. Rule {i}: answer about {topic} item {i}."
        for i in range(52)
    )

    def body(user: str) -> dict[str, Any]:
        return {
            "model": "cheap",  # the cluster's route to the two-backend tier
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }

    first = chat(cluster, 1, body("hi"))
    assert first.status_code == 200, first.text
    assert first.headers["x-tiergate-tier"] == "cheap"
    backend = first.headers["x-tiergate-backend"]
    seen: dict[int, str] = {}
    asked = iter(range(10_000))
    for n in range(2, cluster.replicas + 1):

        def warm(n: int = n) -> bool:
            response = chat(cluster, n, body(f"question {next(asked)}"))
            seen[n] = (
                f"{response.headers['x-tiergate-backend']} {response.headers['x-tiergate-cache']}"
            )
            return response.headers["x-tiergate-cache"].startswith("prefix:")

        until(warm, f"a warm prefix on r{n}", within_s=10)
    report("prefix", {"first": backend, "later": seen})
    assert all(s.startswith(backend) for s in seen.values())


def key_works(cluster: Cluster, n: int, key: str) -> int:
    return httpx.get(
        f"{cluster.replica_url(n)}/v1/key/info",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    ).status_code


def new_key(cluster: Cluster, *options: str) -> dict[str, Any]:
    made: dict[str, Any] = json.loads(
        cluster.tiergate(
            "keys", "create", "--name", f"cluster-{uuid.uuid4().hex[:8]}", *options, "--json"
        )
    )
    each_replica(cluster, lambda n: key_works(cluster, n, made["key"]) == 200, "the new key")
    return made


def test_a_key_revoked_on_one_replica_is_refused_by_all(healthy: Cluster) -> None:
    cluster = healthy
    made = new_key(cluster)
    revoked = httpx.post(
        f"{cluster.replica_url(1)}/admin/keys/{made['id']}/revoke",
        headers=cluster.admin,
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    at = time.monotonic()
    seconds: dict[int, float] = {}

    def refused_by(n: int) -> bool:
        if key_works(cluster, n, made["key"]) != 401:
            return False
        seconds[n] = round(time.monotonic() - at, 3)  # since the revocation
        return True

    each_replica(cluster, refused_by, "the key refused")
    refused = {n: chat(cluster, n, message("hello"), key=made["key"]).status_code for n in seconds}
    report("revoke", {"seconds_until_refused": seconds, "chat_status": refused})
    assert max(seconds.values()) <= REVOKE_WITHIN_S
    assert set(refused.values()) == {401}


def test_one_rate_limit_holds_across_the_replicas(healthy: Cluster) -> None:
    """30 requests through HAProxy (10 to each replica) with a 10-requests-a-minute key: ten
    pass, not thirty."""
    cluster = healthy
    made = new_key(cluster, "--rpm", "10")
    statuses: Counter[int] = Counter()
    by_replica: Counter[str] = Counter()
    for i in range(30):
        response = chat(cluster, None, message(f"hello {i}"), key=made["key"])
        statuses[response.status_code] += 1
        by_replica[f"{response.headers.get('x-tiergate-replica')} {response.status_code}"] += 1
    report("rate-limit", {"statuses": dict(statuses), "by_replica": dict(by_replica)})
    assert set(statuses) == {200, 429}
    # A sliding window: a minute boundary crossed during the run may let one more through.
    assert 10 <= statuses[200] <= 11
    assert len({key.split()[0] for key in by_replica}) == cluster.replicas
