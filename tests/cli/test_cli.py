"""The ``tiergate`` command line, run as the installed program in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.base import Message
from gateway.policy import Policy, load_policy
from gateway.scoring.heuristic import score

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
TIMEOUT_S = 60.0

FAKES = """
version: 1
backends:
  a: {type: fake}
  b: {type: fake}
tiers:
  - {name: low, max_score: 0.4, backends: [a]}
  - {name: high, backends: [b]}
"""

HARD_PROMPT = (
    "Write a Python function `def solve(n):` that computes the integral of x^2 dx from 0 to n. "
    "Prove step by step why the closed form n^3/3 is correct, then explain the trade-offs.\n"
    "1. Derive it.\n2. Implement it.\n3. Analyse its complexity."
)
MEDIUM_PROMPT = "Prove step by step that the square root of 2 is irrational."


def _command() -> list[str]:
    """The installed ``tiergate`` script next to this interpreter (the real entry point)."""
    script = shutil.which("tiergate", path=str(Path(sys.executable).parent))
    if script is not None:
        return [script]
    return [sys.executable, "-c", "from gateway.cli.main import main; main()"]


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without any TIERGATE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    env.update(extra)
    return env


def tiergate(
    *args: str | Path,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(), *map(str, args)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else _env(),
        cwd=cwd,
        timeout=TIMEOUT_S,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def problem_lines(source: Path, stderr: str) -> list[tuple[str, str]]:
    """Each stderr line as (path, message); fails unless every line is `file: path: message`."""
    pattern = re.compile(rf"^{re.escape(str(source))}: (?P<path>[^:]+): (?P<message>\S.*)$")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "expected at least one problem line on stderr"
    parsed = []
    for line in lines:
        match = pattern.match(line)
        assert match, f"not in the form 'file: path: problem': {line!r}"
        parsed.append((match["path"], match["message"]))
    return parsed


def expected_tier(policy: Policy, value: float) -> str:
    """The first tier, cheapest first, whose ceiling takes the score."""
    return next(t.name for t in policy.tiers if value <= t.max_score)


class TestPolicyCheck:
    def test_default_policy_is_ok_and_prints_its_hash(self) -> None:
        """The embedded default validates: exit 0 and an ok line with the policy's hash."""
        result = tiergate("policy", "check", DEFAULT_POLICY)
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout
        assert load_policy(DEFAULT_POLICY).hash in result.stdout

    @pytest.mark.parametrize(
        ("text", "path", "fragments"),
        [
            pytest.param(
                FAKES.replace("a: {type: fake}", "a: {type: fake, replyy: hi}"),
                "backends.a.replyy",
                ["unknown field 'replyy'", "valid fields here", "script"],
                id="unknown-backend-field",
            ),
            pytest.param(
                FAKES + "tierz: []\n",
                "tierz",
                ["unknown field 'tierz'", "tiers"],
                id="unknown-top-level-field",
            ),
            pytest.param(
                FAKES.replace("backends: [b]", "backends: [b, c]"),
                "tiers[1].backends[1]",
                ["unknown backend 'c'", "known: a, b"],
                id="unknown-backend-in-tier",
            ),
            pytest.param(
                FAKES.replace(
                    "  - {name: high",
                    "  - {name: mid, max_score: 0.4, backends: [a]}\n  - {name: high",
                ),
                "tiers[1].max_score",
                ["not above the previous tier", "rising max_score"],
                id="non-increasing-max-score",
            ),
            pytest.param(
                FAKES + "timeouts: {total_s: 20, per_try_s: 45}\n",
                "timeouts.per_try_s",
                ["45 s is longer than timeouts.total_s (20 s", "lower per_try_s to 20"],
                id="per-try-longer-than-total",
            ),
            pytest.param(
                FAKES.replace("tiers:", "tiers: [\n  oops"),
                None,
                ["not valid YAML", "fix the syntax"],
                id="yaml-syntax-error",
            ),
        ],
    )
    def test_broken_policy_fails_with_file_path_problem_lines(
        self, tmp_path: Path, text: str, path: str | None, fragments: list[str]
    ) -> None:
        """Each kind of mistake exits non-zero with `file: path.to.field: problem` lines."""
        source = write(tmp_path / "broken.yaml", text)
        result = tiergate("policy", "check", source)
        assert result.returncode != 0
        assert "ok" not in result.stdout
        problems = problem_lines(source, result.stderr)
        paths = [p for p, _ in problems]
        if path is None:  # a YAML syntax error is located by line and column
            assert all(re.fullmatch(r"line \d+ column \d+", p) for p in paths), paths
        else:
            assert path in paths, problems
        message = next(m for p, m in problems if path is None or p == path)
        for fragment in fragments:
            assert fragment in message

    @pytest.mark.parametrize(
        ("text", "paths"),
        [
            pytest.param(
                FAKES.replace("a: {type: fake}", "a: {type: fake, replyy: 1}")
                .replace("b: {type: fake}", "b: {type: fakee}")
                .replace("max_score: 0.4", "max_score: 1.5"),
                {"backends.a.replyy", "backends.b", "tiers[0].max_score"},
                id="schema",
            ),
            pytest.param(
                FAKES.replace("backends: [b]", "backends: [zz]")
                + "routes:\n  auto: {tiers: [low, middle]}\n",
                {"tiers[1].backends[0]", "routes.auto.tiers[1]"},
                id="references",
            ),
            pytest.param(
                FAKES.replace("a: {type: fake}", "a: {type: fake, replyy: 1}").replace(
                    "backends: [b]", "backends: [zz]"
                ),
                {"backends.a.replyy", "tiers[1].backends[0]"},
                id="unknown-field-and-references",
            ),
        ],
    )
    def test_every_problem_is_reported_at_once(
        self, tmp_path: Path, text: str, paths: set[str]
    ) -> None:
        """Independent mistakes give one line each, so a single run finds them all."""
        source = write(tmp_path / "several.yaml", text)
        result = tiergate("policy", "check", source)
        assert result.returncode != 0
        assert paths <= {p for p, _ in problem_lines(source, result.stderr)}

    def test_a_missing_gguf_fails_the_check(self, tmp_path: Path) -> None:
        """A tiny backend's GGUF that is not there fails the check (it would go live and answer
        every request with 503); the packaged default passes."""
        missing = tmp_path / "nowhere.gguf"
        source = write(
            tmp_path / "tiny.yaml",
            FAKES.replace("a: {type: fake}", f"a: {{type: tiny, model: {missing}}}"),
        )
        result = tiergate("policy", "check", source)
        assert result.returncode == 1
        assert "ok" not in result.stdout
        [(path, message)] = problem_lines(source, result.stderr)
        assert path == "backends.a.model"
        assert str(missing) in message
        assert "'default'" in message
        write(source, FAKES.replace("a: {type: fake}", "a: {type: tiny, model: default}"))
        assert tiergate("policy", "check", source).returncode == 0

    def test_missing_file_is_a_problem_line(self, tmp_path: Path) -> None:
        """A path that does not exist is reported in the same form, naming the setting to fix."""
        source = tmp_path / "nowhere.yaml"
        result = tiergate("policy", "check", source)
        assert result.returncode != 0
        [(path, message)] = problem_lines(source, result.stderr)
        assert path == "(file)"
        assert "cannot read it" in message
        assert "TIERGATE_POLICY" in message

    def test_remote_backend_without_its_key_is_a_note_not_an_error(self, tmp_path: Path) -> None:
        """A remote backend whose key variable is unset is noted on stderr; the check passes."""
        variable = "TIERGATE_TEST_CLI_ABSENT_KEY"
        source = write(
            tmp_path / "remote.yaml",
            FAKES.replace(
                "b: {type: fake}",
                f"b: {{type: remote, model: openai/gpt-4o-mini, api_key_env: {variable}}}",
            ),
        )
        result = tiergate("policy", "check", source, env=_env())
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout
        notes = problem_lines(source, result.stderr)
        assert all(message.startswith("note:") for _, message in notes)
        # The fake backend gets its own "no price" note; the remote one the key note.
        [(path, message)] = [(p, m) for p, m in notes if p == "backends.b"]
        assert path == "backends.b"
        assert message.startswith("note:")
        assert variable in message

        with_key = tiergate("policy", "check", source, env=_env(**{variable: "sk-test"}))
        assert with_key.returncode == 0
        assert variable not in with_key.stderr


class TestPolicyExplain:
    def explain_json(self, *args: str | Path) -> dict[str, Any]:
        result = tiergate("policy", "explain", DEFAULT_POLICY, "--json", *args)
        assert result.returncode == 0, result.stderr
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    def test_json_has_the_decision_and_matches_the_scorer(self) -> None:
        """--json gives the score, features, tier, candidates and reasons the policy implies."""
        data = self.explain_json("--prompt", HARD_PROMPT)
        assert {"score", "features", "tier", "candidates", "reasons"} <= set(data)
        policy = load_policy(DEFAULT_POLICY)
        expected = score([Message(role="user", content=HARD_PROMPT)], None, policy.scorer)
        assert data["score"] == pytest.approx(expected.value, abs=1e-4)
        assert data["tier"] == expected_tier(policy, expected.value)
        assert data["policy"] == policy.hash
        fired = {f["feature"] for f in data["features"] if f["contribution"] > 0}
        assert {"code", "math", "reasoning"} <= fired
        contributions = [f["contribution"] for f in data["features"]]
        assert contributions == sorted(contributions, reverse=True)
        backends = [c["backend"] for c in data["candidates"]]
        assert backends[0] in policy.tier(data["tier"]).backends
        assert sorted(backends) == sorted(policy.backends)  # fallback reaches every tier
        assert data["reasons"]

    def test_text_output_shows_score_features_tier_candidates_and_reasons(self) -> None:
        """The terminal rendering carries the same decision as the JSON, candidates in order."""
        data = self.explain_json("--prompt", HARD_PROMPT)
        result = tiergate("policy", "explain", DEFAULT_POLICY, "--prompt", HARD_PROMPT)
        assert result.returncode == 0, result.stderr
        text = result.stdout
        assert f"{data['score']:.3f}" in text
        for feature in (f for f in data["features"] if f["contribution"] > 0):
            assert feature["feature"] in text
        assert re.search(rf"^tier\s+{re.escape(data['tier'])}$", text, re.MULTILINE)
        positions = [
            text.index(f"{i}. {c['backend']}") for i, c in enumerate(data["candidates"], 1)
        ]
        assert positions == sorted(positions)
        for reason in data["reasons"]:
            assert reason in text

    def test_hard_prompt_picks_a_higher_tier_than_hi(self) -> None:
        """Code, maths and reasoning push a prompt above the tier a greeting gets."""
        order = [t.name for t in load_policy(DEFAULT_POLICY).tiers]
        easy = self.explain_json("--prompt", "hi")
        hard = self.explain_json("--prompt", HARD_PROMPT)
        assert hard["score"] > easy["score"]
        assert order.index(hard["tier"]) > order.index(easy["tier"])

    def test_model_pins_a_backend(self) -> None:
        """--model with a backend name shows a pinned decision: no score, only that backend."""
        data = self.explain_json("--prompt", HARD_PROMPT, "--model", "tiny")
        assert data["pinned"] is True
        assert data["score"] is None
        assert [c["backend"] for c in data["candidates"]] == ["tiny"]
        text = tiergate(
            "policy", "explain", DEFAULT_POLICY, "--prompt", "hi", "--model", "tiny"
        ).stdout
        assert "pinned" in text

    def test_unknown_model_lists_the_valid_names(self) -> None:
        """An unknown --model exits non-zero and names every route and backend that would do."""
        result = tiergate(
            "policy", "explain", DEFAULT_POLICY, "--prompt", "hi", "--model", "no-such-model"
        )
        assert result.returncode != 0
        assert "no-such-model" in result.stderr
        for name in load_policy(DEFAULT_POLICY).valid_models():
            assert name in result.stderr


SCORE_LINES: list[dict[str, Any]] = [
    {"id": "greeting", "prompt": "hi"},
    {"id": 7, "prompt": HARD_PROMPT},
    {"id": "chat", "messages": [{"role": "user", "content": MEDIUM_PROMPT}]},
    {
        "id": "conversation",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": MEDIUM_PROMPT},
        ],
    },
]


class TestScore:
    @staticmethod
    def thresholds(tmp_path: Path, low_max: float) -> Path:
        return write(
            tmp_path / f"low-{low_max}.yaml",
            FAKES.replace("max_score: 0.4", f"max_score: {low_max}"),
        )

    @staticmethod
    def parse(stdout: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in stdout.splitlines() if line.strip()]

    def jsonl(self) -> str:
        return "".join(json.dumps(item) + "\n" for item in SCORE_LINES)

    def test_file_and_stdin_give_one_line_per_input_in_order(self, tmp_path: Path) -> None:
        """Every input line gets {id, score, tier}: same ids, same order, tiers by the policy."""
        source = write(tmp_path / "prompts.jsonl", self.jsonl())
        from_file = tiergate("score", source, "--policy", DEFAULT_POLICY)
        from_stdin = tiergate("score", "--policy", DEFAULT_POLICY, stdin=self.jsonl())
        assert from_file.returncode == 0, from_file.stderr
        assert from_stdin.returncode == 0, from_stdin.stderr
        rows = self.parse(from_file.stdout)
        assert rows == self.parse(from_stdin.stdout)
        assert [r["id"] for r in rows] == [item["id"] for item in SCORE_LINES]
        policy = load_policy(DEFAULT_POLICY)
        for row in rows:
            assert set(row) == {"id", "score", "tier"}
            assert 0.0 <= row["score"] <= 1.0
            assert row["tier"] == expected_tier(policy, row["score"])
        by_id = {r["id"]: r for r in rows}
        assert by_id[7]["score"] > by_id["greeting"]["score"]

    def test_policy_option_changes_the_tiers(self, tmp_path: Path) -> None:
        """--policy picks the thresholds: a lower first ceiling sends mid scores up a tier."""
        generous, strict = self.thresholds(tmp_path, 0.95), self.thresholds(tmp_path, 0.05)
        results = {}
        for name, policy_path in (("generous", generous), ("strict", strict)):
            run = tiergate("score", "--policy", policy_path, stdin=self.jsonl())
            assert run.returncode == 0, run.stderr
            rows = self.parse(run.stdout)
            policy = load_policy(policy_path)
            assert all(r["tier"] == expected_tier(policy, r["score"]) for r in rows)
            results[name] = rows
        scores = [r["score"] for r in results["generous"]]
        assert scores == [r["score"] for r in results["strict"]]  # same scorer weights
        assert any(0.05 < s <= 0.95 for s in scores), "need a score between the two ceilings"
        assert [r["tier"] for r in results["generous"]] != [r["tier"] for r in results["strict"]]

    def test_default_policy_comes_from_the_environment(self, tmp_path: Path) -> None:
        """Without --policy, TIERGATE_POLICY names the policy used for the tiers."""
        strict = self.thresholds(tmp_path, 0.05)
        via_env = tiergate("score", stdin=self.jsonl(), env=_env(TIERGATE_POLICY=str(strict)))
        via_option = tiergate("score", "--policy", strict, stdin=self.jsonl())
        assert via_env.returncode == 0, via_env.stderr
        assert self.parse(via_env.stdout) == self.parse(via_option.stdout)

    def test_malformed_lines_are_reported_and_the_rest_scored(self) -> None:
        """Bad lines go to stderr with their line numbers, good ones are scored, exit non-zero."""
        lines = [
            json.dumps({"id": "first", "prompt": "hi"}),
            "{not json",
            json.dumps({"id": "no-text"}),
            json.dumps({"id": "bad-tokens", "prompt": "hi", "max_tokens": "many"}),
            json.dumps({"id": "last", "messages": [{"role": "user", "content": "hello"}]}),
        ]
        result = tiergate("score", "--policy", DEFAULT_POLICY, stdin="\n".join(lines) + "\n")
        assert result.returncode != 0
        assert [r["id"] for r in self.parse(result.stdout)] == ["first", "last"]
        reported = re.findall(r"^line (\d+): \S", result.stderr, re.MULTILINE)
        assert reported == ["2", "3", "4"]
        assert "Traceback" not in result.stderr

    def test_missing_input_file_is_a_clear_error(self, tmp_path: Path) -> None:
        """A file that does not exist is named in a usage error, without a traceback."""
        result = tiergate("score", tmp_path / "absent.jsonl", "--policy", DEFAULT_POLICY)
        assert result.returncode != 0
        assert "absent.jsonl" in result.stderr
        assert "Traceback" not in result.stderr


HEAVY_IMPORTS_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from gateway.cli.main import app

policy = sys.argv[1]
runner = CliRunner()
codes = [
    runner.invoke(app, ["policy", "check", policy]).exit_code,
    runner.invoke(app, ["policy", "explain", policy, "--prompt", "sort a list in Rust"]).exit_code,
    runner.invoke(app, ["score", "--policy", policy], input='{"prompt": "hi"}\\n').exit_code,
]
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"litellm", "llama_cpp"})
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_offline_commands_never_import_litellm_or_llama_cpp() -> None:
    """check, explain and score on a policy with tiny and remote backends load neither library."""
    assert {c.type for c in load_policy(DEFAULT_POLICY).backends.values()} >= {"tiny", "remote"}
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_IMPORTS_SCRIPT, str(DEFAULT_POLICY)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["codes"] == [0, 0, 0]
    assert report["heavy"] == []


class TestServe:
    def test_broken_policy_stops_serve_with_the_problem_lines(self, tmp_path: Path) -> None:
        """serve validates the policy first and exits non-zero with `file: path: problem`."""
        source = write(tmp_path / "broken.yaml", FAKES.replace("backends: [b]", "backends: [q]"))
        result = tiergate("serve", "--policy", source, "--port", str(_free_port()))
        assert result.returncode != 0
        [(path, message)] = problem_lines(source, result.stderr)
        assert path == "tiers[1].backends[0]"
        assert "unknown backend 'q'" in message

    def test_refuses_a_public_address_without_keys(self, tmp_path: Path) -> None:
        """On 0.0.0.0 with no TIERGATE_API_KEYS it will not start, and says why and what to set."""
        source = write(tmp_path / "fakes.yaml", FAKES)
        result = tiergate("serve", "--policy", source, "--host", "0.0.0.0", "--port", "0")
        assert result.returncode != 0
        assert "refusing to listen on 0.0.0.0" in result.stderr
        assert "TIERGATE_API_KEYS" in result.stderr
        assert "Traceback" not in result.stderr

    def test_bad_setting_is_a_one_line_error(self, tmp_path: Path) -> None:
        """A malformed TIERGATE_* value names the variable instead of printing a traceback."""
        source = write(tmp_path / "fakes.yaml", FAKES)
        result = tiergate("serve", "--policy", source, env=_env(TIERGATE_PORT="eighty"))
        assert result.returncode != 0
        assert "TIERGATE_PORT" in result.stderr
        assert "Traceback" not in result.stderr

    def test_public_address_with_keys_starts(self, tmp_path: Path) -> None:
        """The same public address is accepted once client keys are configured."""
        source = write(tmp_path / "fakes.yaml", FAKES)
        port = _free_port()
        env = _env(
            TIERGATE_API_KEYS="ci:cli-test-key-0123456789",
            TIERGATE_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
            TIERGATE_OUTBOX_PATH=str(tmp_path / "outbox.db"),
        )
        with _running(
            [
                *_command(),
                "serve",
                "--policy",
                str(source),
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
            ],
            env,
        ) as proc:
            _wait_healthy(proc, f"http://127.0.0.1:{port}")
            refused = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            assert refused.status_code == 401


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _running:
    """A server process, terminated (and reaped) on exit."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def __enter__(self) -> subprocess.Popen[bytes]:
        return self.proc

    def __exit__(self, *_exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wait_healthy(proc: subprocess.Popen[bytes], base_url: str) -> None:
    """Poll /healthz until it answers, bounded; between polls wait on the process itself, so
    a server that dies fails the test at once."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
        assert proc.returncode is None, f"the server exited with {proc.returncode}"
    raise AssertionError(f"{base_url}/healthz did not answer within {TIMEOUT_S} s")


class TestPricingNotes:
    def test_unpriced_backends_and_missing_baseline_are_noted(self, tmp_path: Path) -> None:
        """policy check says which backends have no price and that without a baseline the
        reports cannot show savings; the check still passes."""
        source = write(tmp_path / "fakes.yaml", FAKES)
        result = tiergate("policy", "check", source, env=_env())
        assert result.returncode == 0, result.stderr
        paths = {path for path, _ in problem_lines(source, result.stderr)}
        assert "pricing.baseline" in paths
        assert any(path.startswith("pricing.backends.") for path in paths)


def test_check_says_why_a_remote_last_tier_gives_no_baseline(tmp_path: Path) -> None:
    """A last tier whose remote model litellm's price map does not know, with no price in the
    policy, gives no default baseline: the note says so (it said there was no remote backend
    in the last tier, which sent the reader looking for the wrong mistake)."""
    source = write(
        tmp_path / "p.yaml",
        """\
        version: 1
        backends:
          tiny: {type: tiny, model: default}
          ours: {type: remote, model: openai/our-fine-tune-v3, api_key_env: OUR_KEY}
        tiers:
          - {name: tiny, max_score: 0.2, backends: [tiny]}
          - {name: remote, backends: [ours]}
        """,
    )
    done = tiergate("policy", "check", source)
    assert done.returncode == 0, done.stderr
    notes = dict(
        problem_lines(
            source,
            "\n".join(line for line in done.stderr.splitlines() if "pricing.baseline" in line),
        )
    )
    assert "the last tier's remote backend 'ours'" in notes["pricing.baseline"]
    assert "no remote backend in the last tier" not in notes["pricing.baseline"]
