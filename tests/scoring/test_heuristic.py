from __future__ import annotations

from types import MappingProxyType

from adapters.base import Message
from gateway.scoring.heuristic import DEFAULT_WEIGHTS, FEATURES, ScorerWeights, score


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


W = ScorerWeights()


def test_score_is_deterministic_and_bounded() -> None:
    """The same request always scores the same, inside [0, 1]."""
    prompts = ["hi", "Prove the theorem step by step " * 200, "```python\ndef f(): pass\n```"]
    for prompt in prompts:
        first = score(user(prompt), 512, W)
        assert first == score(user(prompt), 512, W)
        assert 0.0 <= first.value <= 1.0


def test_plain_chit_chat_scores_low_and_hard_work_scores_high() -> None:
    """A greeting scores below a multi-step coding-and-maths request."""
    easy = score(user("Hello, how are you today?"), None, W)
    hard = score(
        user(
            "Implement a Python function that solves the equation x^2 + 3x = 10, then explain "
            "step by step why the algorithm is correct and compare its complexity with "
            "Newton's method.\n1. code\n2. proof\n3. analysis"
        ),
        2048,
        W,
    )
    assert easy.value < 0.1
    assert hard.value > 0.6
    top = {c.feature for c in hard.top(4)}
    assert {"code", "math", "reasoning"} <= top


def test_each_feature_fires_on_its_cue() -> None:
    """Code, maths, reasoning and depth each move their own feature."""
    cases = {
        "code": "Fix this: ```js\nconst x = () => { return 1; }\n```",
        "math": "What is 17*23 + 4? Compute the integral too.",
        "reasoning": "Why does this happen? Explain the trade-offs and justify it.",
        "multi_step": "First do this, then that, finally the last step.",
        "constraints": "Answer in exactly three words, without punctuation, only lowercase.",
    }
    for feature, prompt in cases.items():
        result = score(user(prompt), None, W)
        values = {c.feature: c.value for c in result.contributions}
        assert values[feature] > 0, feature


def test_conversation_depth_and_max_tokens_raise_the_score() -> None:
    """A deep conversation and a large requested output both push the score up."""
    one = score(user("Tell me more."), None, W)
    turns = []
    for i in range(8):
        turns += [Message(role="user", content=f"q{i}"), Message(role="assistant", content="a")]
    deep = score([*turns, Message(role="user", content="Tell me more.")], None, W)
    long = score(user("Tell me more."), 4096, W)
    assert deep.value > one.value
    assert long.value > one.value


def test_system_prompt_cues_do_not_count_but_its_length_does() -> None:
    """Cue words in a system prompt don't push every request up a tier; its tokens do count."""
    system = Message(role="system", content="Always explain why, step by step, with proofs.")
    bare = score(user("Hi there"), None, W)
    with_system = score([system, *user("Hi there")], None, W)
    values = {c.feature: c.value for c in with_system.contributions}
    assert values["reasoning"] == 0.0
    assert with_system.prompt_tokens > bare.prompt_tokens


def test_weights_and_bias_come_from_the_policy() -> None:
    """Zero weights and a bias give exactly the bias; a heavier weight raises the score."""
    zero = ScorerWeights(bias=0.42, weights=MappingProxyType(dict.fromkeys(FEATURES, 0.0)))
    assert score(user("Why? Explain step by step."), None, zero).value == 0.42
    heavy = ScorerWeights(weights=MappingProxyType({**DEFAULT_WEIGHTS, "reasoning": 1.0}))
    prompt = user("Why does ice float? Explain.")
    assert score(prompt, None, heavy).value > score(prompt, None, W).value


def test_token_estimate_tracks_tiktoken_on_long_prompts() -> None:
    """The prompt-token estimate stays within 10% of tiktoken's exact count."""
    from gateway.scoring.tokens import count_exact

    text = "The committee reviewed the quarterly figures and asked for a revised forecast. " * 80
    estimate = score(user(text), None, W).prompt_tokens
    exact = count_exact(text)
    assert abs(estimate - exact) <= exact * 0.10
