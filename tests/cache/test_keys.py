"""Cache keys: the response key changes with anything that changes the answer and with nothing
else (checked on the pure function and through the HTTP app, where a repeat must hit), which
requests count as deterministic, and prefix hashes as a stable chain."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import ChatRequest, Message
from gateway.cache.keys import deterministic, prefix_hashes, prompt_text, response_key
from gateway.scoring.tokens import encode
from tests.http.helpers import fakes, gateway

CHAT = "/v1/chat/completions"
REPO = Path(__file__).resolve().parents[2]

BASE = ChatRequest(
    messages=(
        Message(role="system", content="You answer in one short sentence."),
        Message(role="user", content="What is the capital of France?"),
    ),
    max_tokens=32,
    temperature=0.0,
    top_p=0.9,
    stop=("\n\n",),
    seed=None,
)


def _with(**changes: Any) -> ChatRequest:
    return dataclasses.replace(BASE, **changes)


def _messages(*turns: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role=role, content=content) for role, content in turns)  # type: ignore[arg-type]


SYSTEM = ("system", "You answer in one short sentence.")
USER = ("user", "What is the capital of France?")

# Each changes one thing that changes the answer: its key must differ from BASE's.
ANSWER_CHANGES: dict[str, ChatRequest] = {
    "user text": _with(messages=_messages(SYSTEM, ("user", "What is the capital of Spain?"))),
    "system text": _with(messages=_messages(("system", "Answer at length."), USER)),
    "one character": _with(messages=_messages(SYSTEM, ("user", "What is the capital of France!"))),
    "role": _with(messages=_messages(("user", SYSTEM[1]), USER)),
    "order": _with(messages=_messages(USER, SYSTEM)),
    "a turn more": _with(messages=_messages(SYSTEM, USER, ("assistant", "Paris."), USER)),
    "a turn less": _with(messages=_messages(USER)),
    "name": _with(messages=(BASE.messages[0], Message(role="user", content=USER[1], name="alice"))),
    "temperature": _with(temperature=0.7),
    "temperature unset": _with(temperature=None),
    "top_p": _with(top_p=0.5),
    "top_p unset": _with(top_p=None),
    "top_k": _with(top_k=40),
    "max_tokens": _with(max_tokens=33),
    "max_tokens unset": _with(max_tokens=None),
    "stop": _with(stop=("\n",)),
    "a stop more": _with(stop=("\n\n", "###")),
    "no stop": _with(stop=()),
    "seed": _with(seed=1),
    "another seed": _with(seed=2),
    "presence_penalty": _with(presence_penalty=0.5),
    "another presence_penalty": _with(presence_penalty=-0.5),
    "frequency_penalty": _with(frequency_penalty=0.5),
    "another frequency_penalty": _with(frequency_penalty=1.5),
}


class TestResponseKey:
    def test_the_same_request_gives_the_same_key(self) -> None:
        """Two equal requests (built separately) have the same key, a short hex name."""
        again = ChatRequest(
            messages=_messages(SYSTEM, USER),
            max_tokens=32,
            temperature=0.0,
            top_p=0.9,
            stop=("\n\n",),
        )
        key = response_key("auto", BASE)
        assert key == response_key("auto", again)
        assert key.startswith("r:")
        assert all(c in "0123456789abcdef" for c in key[2:])

    @pytest.mark.parametrize("change", list(ANSWER_CHANGES))
    def test_a_change_to_the_answer_changes_the_key(self, change: str) -> None:
        """Messages (text, role, order, count, name) and every sampling parameter are in the
        key: a request differing in any of them gets another key."""
        assert response_key("auto", ANSWER_CHANGES[change]) != response_key("auto", BASE)

    def test_every_change_gives_its_own_key(self) -> None:
        """The changed requests do not collide with each other either."""
        keys = {response_key("auto", request) for request in ANSWER_CHANGES.values()}
        assert len(keys) == len(ANSWER_CHANGES)

    def test_the_route_is_in_the_key(self) -> None:
        """The same request on another route (another set of tiers) gets another key."""
        assert response_key("auto", BASE) != response_key("premium", BASE)

    def test_extra_fields_that_shape_the_answer_are_in_the_key(self) -> None:
        """Tools and a response format passed as ``extra`` change the key; their JSON key
        order does not."""
        tool = {"type": "function", "function": {"name": "weather", "parameters": {}}}
        reordered = {"function": {"parameters": {}, "name": "weather"}, "type": "function"}
        plain = response_key("auto", BASE)
        with_tools = response_key("auto", BASE, extra={"tools": [tool]})
        assert with_tools != plain
        assert response_key("auto", BASE, extra={"tools": [reordered]}) == with_tools
        other_tool = {"type": "function", "function": {"name": "time", "parameters": {}}}
        assert response_key("auto", BASE, extra={"tools": [other_tool]}) != with_tools
        json_mode = response_key("auto", BASE, extra={"response_format": {"type": "json_object"}})
        assert json_mode not in (plain, with_tools)

    def test_a_key_id_isolates(self) -> None:
        """With a key id (per-key caching) two API keys never share a key, nor the shared one."""
        shared = response_key("auto", BASE)
        team_a = response_key("auto", BASE, key_id="team-a")
        team_b = response_key("auto", BASE, key_id="team-b")
        assert len({shared, team_a, team_b}) == 3
        assert response_key("auto", BASE, key_id="team-a") == team_a

    def test_equal_numbers_and_stop_sets_give_the_same_key(self) -> None:
        """An integer temperature equals its float; stop sequences are a set (order and
        repeats do not change where generation stops)."""
        assert response_key("auto", _with(temperature=0)) == response_key("auto", BASE)
        assert response_key("auto", _with(top_p=1)) == response_key("auto", _with(top_p=1.0))
        two = _with(stop=("\n\n", "###"))
        assert response_key("auto", _with(stop=("###", "\n\n"))) == response_key("auto", two)
        assert response_key("auto", _with(stop=("\n\n", "\n\n"))) == response_key("auto", BASE)


class TestDeterministic:
    @pytest.mark.parametrize(
        ("temperature", "seed", "expected"),
        [
            (0.0, None, True),
            (0, None, True),
            (0.0, 7, True),
            (0.7, 7, True),
            (None, 7, True),
            (0.7, None, False),
            (None, None, False),  # the backend's default temperature samples
            (1e-3, None, False),
            (0.7, -1, False),  # llama.cpp's "random seed"
            (0.0, -1, True),
        ],
    )
    def test_greedy_or_seeded_requests_are_deterministic(
        self, temperature: float | None, seed: int | None, expected: bool
    ) -> None:
        """Temperature 0 or a seed make a request deterministic; anything else samples, a
        negative seed included."""
        request = _with(temperature=temperature, seed=seed)
        assert deterministic(request) is expected


def _long_system(words: int = 420) -> str:
    """A long system prompt (o200k: roughly a token a word)."""
    vocabulary = (
        "policy ledger routing replica prefix cache token budget latency fallback tier "
        "gateway answer request stream model backend score"
    ).split()
    return " ".join(vocabulary[(i * 7) % len(vocabulary)] + str(i % 13) for i in range(words))


class TestPrefixHashes:
    def test_hashes_cover_the_full_blocks(self) -> None:
        """One hash per full block of the prompt's tokens; a prompt under one block has none."""
        messages = _messages(("system", _long_system()), ("user", "hello"))
        tokens = len(encode(prompt_text(messages)))
        for block in (16, 64, 100):
            assert len(prefix_hashes(messages, block_tokens=block)) == tokens // block
        short = _messages(("user", "hi"))
        assert prefix_hashes(short, block_tokens=16) == []
        assert len(prefix_hashes(messages, block_tokens=16, max_blocks=3)) == 3

    def test_a_longer_prompt_extends_the_chain(self) -> None:
        """A conversation that continues another starts with the other's hashes."""
        short = _messages(("system", _long_system()), ("user", "first question"))
        longer = (
            *short,
            Message(role="assistant", content="first answer"),
            Message(role="user", content="a second question, much longer " * 20),
        )
        first = prefix_hashes(short, block_tokens=32)
        second = prefix_hashes(longer, block_tokens=32)
        assert len(first) >= 10
        assert len(second) > len(first)
        assert second[: len(first)] == first

    def test_a_shared_system_prompt_shares_its_blocks(self) -> None:
        """Two prompts with the same long system prompt and different user turns share the
        hashes of the blocks inside the system prompt, and differ after."""
        system = _long_system()
        one = prefix_hashes(_messages(("system", system), ("user", "alpha " * 80)), block_tokens=64)
        two = prefix_hashes(_messages(("system", system), ("user", "omega " * 80)), block_tokens=64)
        inside = len(encode(f"<|system|>{system}")) // 64
        assert inside >= 5
        assert one[:inside] == two[:inside]
        assert one[-1] != two[-1]

    def test_each_hash_names_the_whole_prefix(self) -> None:
        """The hashes are chained: a change in the first block changes every later hash,
        even where the later blocks' tokens are the same."""
        system = _long_system()
        one = prefix_hashes(_messages(("system", "A. " + system), ("user", "x")), block_tokens=32)
        two = prefix_hashes(_messages(("system", "B. " + system), ("user", "x")), block_tokens=32)
        assert len(one) == len(two) >= 10
        assert not set(one) & set(two)
        assert len(set(one)) == len(one)  # and no two prefixes of one prompt share a name

    def test_hashes_and_keys_are_stable_across_processes(self) -> None:
        """Another process (another hash seed) computes the same prefix hashes and response
        key: gateway replicas sharing Redis agree on names."""
        messages = _messages(("system", _long_system()), ("user", "a question"))
        here = {
            "prefixes": prefix_hashes(messages, block_tokens=64),
            "key": response_key("auto", BASE, key_id="team-a"),
        }
        script = (
            "import json, sys\n"
            "from tests.cache.test_keys import BASE, _long_system, _messages\n"
            "from gateway.cache.keys import prefix_hashes, response_key\n"
            "m = _messages(('system', _long_system()), ('user', 'a question'))\n"
            "print(json.dumps({'prefixes': prefix_hashes(m, block_tokens=64),"
            " 'key': response_key('auto', BASE, key_id='team-a')}))\n"
        )
        env = {**os.environ, "PYTHONHASHSEED": "12345"}
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, check=True
        )
        assert json.loads(out.stdout) == here
        assert prefix_hashes(messages, block_tokens=64) == here["prefixes"]


# --- through the HTTP app ---------------------------------------------------------------------

POLICY = """
version: 1
backends:
  small: {type: fake, model: small-model}
tiers:
  - {name: only, backends: [small]}
routes:
  auto: {}
  other: {}
"""


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


async def _post(client: httpx.AsyncClient, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        CHAT, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    return response


def _chat(**fields: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [
            {"role": "system", "content": SYSTEM[1]},
            {"role": "user", "content": USER[1]},
        ],
        "temperature": 0,
        "max_tokens": 32,
        **fields,
    }


async def test_json_key_order_does_not_matter(tmp_path: Path) -> None:
    """The same request with its JSON keys (top level and inside messages) in another order
    and other spacing is one miss, then a hit, and the backend is asked once."""
    first = (
        b'{"model": "auto", "temperature": 0, "max_tokens": 32, "stop": ["\\n\\n"], "messages": '
        b'[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]}'
    )
    second = (
        b'{"messages":[{"content":"Be brief.","role":"system"},{"content":"Hi?","role":"user"}],'
        b'"stop":["\\n\\n"],"max_tokens":32,"temperature":0,"model":"auto"}'
    )
    backends = fakes("small")
    async with gateway(_policy(tmp_path), backends=backends, ledger=False) as (client, app):
        miss = await _post(client, first)
        await app.state.cache.flush()
        hit = await _post(client, second)
    assert miss.headers["x-tiergate-cache"] == "miss"
    assert hit.headers["x-tiergate-cache"] == "hit"
    assert len(backends["small"].requests) == 1


# Pairs of bodies that ask the backend the very same thing.
SAME_ANSWER: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "stop as a string or a list": (_chat(stop="\n\n"), _chat(stop=["\n\n"])),
    "stop order": (_chat(stop=["###", "\n\n"]), _chat(stop=["\n\n", "###"])),
    "temperature 0 or 0.0": (_chat(temperature=0), _chat(temperature=0.0)),
    "max_tokens or max_completion_tokens": (
        _chat(),
        {k: v for k, v in _chat(max_completion_tokens=32).items() if k != "max_tokens"},
    ),
    "model left out (the default route)": (
        _chat(),
        {k: v for k, v in _chat().items() if k != "model"},
    ),
    "user and metadata fields": (_chat(), _chat(user="u-123", metadata={"trace": "abc"})),
    "a negative seed or none": (_chat(), _chat(seed=-1)),
    "penalty 0 or 0.0": (_chat(presence_penalty=0), _chat(presence_penalty=0.0)),
    "response_format text": (_chat(), _chat(response_format={"type": "text"})),
    "developer is system": (
        _chat(),
        _chat(
            messages=[
                {"role": "developer", "content": SYSTEM[1]},
                {"role": "user", "content": USER[1]},
            ]
        ),
    ),
    "text content parts": (
        _chat(),
        _chat(
            messages=[
                {"role": "system", "content": [{"type": "text", "text": SYSTEM[1]}]},
                {"role": "user", "content": USER[1]},
            ]
        ),
    ),
}


@pytest.mark.parametrize("pair", list(SAME_ANSWER))
async def test_irrelevant_differences_still_hit(tmp_path: Path, pair: str) -> None:
    """Two spellings of one request: the second is answered from the cache."""
    first, second = SAME_ANSWER[pair]
    backends = fakes("small")
    async with gateway(_policy(tmp_path), backends=backends, ledger=False) as (client, app):
        miss = await _post(client, first)
        await app.state.cache.flush()
        hit = await _post(client, second)
    assert miss.headers["x-tiergate-cache"] == "miss"
    assert hit.headers["x-tiergate-cache"] == "hit"
    assert len(backends["small"].requests) == 1


async def test_relevant_differences_miss(tmp_path: Path) -> None:
    """Requests that differ in what changes the answer each go to the backend; the first one
    repeated is then a hit."""
    variants = [
        _chat(),
        _chat(model="other"),
        _chat(max_tokens=33),
        _chat(stop="\n"),
        _chat(seed=5),
        _chat(top_p=0.5),
        _chat(temperature=0, seed=6),
        _chat(presence_penalty=0.5),
        _chat(frequency_penalty=0.5),
        _chat(presence_penalty=0.5, frequency_penalty=0.5),
        _chat(
            messages=[
                {"role": "user", "content": USER[1]},
                {"role": "system", "content": SYSTEM[1]},
            ]
        ),
        _chat(messages=[{"role": "user", "content": USER[1]}]),
        _chat(messages=[{"role": "user", "content": USER[1] + " "}]),
    ]
    backends = fakes("small")
    async with gateway(_policy(tmp_path), backends=backends, ledger=False) as (client, app):
        labels = []
        for body in variants:
            labels.append((await _post(client, body)).headers["x-tiergate-cache"])
            await app.state.cache.flush()
        again = await _post(client, variants[0])
    assert labels == ["miss"] * len(variants)
    assert len(backends["small"].requests) == len(variants)
    assert again.headers["x-tiergate-cache"] == "hit"
