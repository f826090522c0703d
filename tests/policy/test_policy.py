from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicyError, UnknownRoute, load_policy, parse_policy

BASE = """
version: 1
backends:
  small: {type: fake, model: s}
  mid: {type: fake, model: m}
  big: {type: fake, model: b}
tiers:
  - {name: cheap, max_score: 0.3, backends: [small]}
  - {name: middle, max_score: 0.6, backends: [mid]}
  - {name: strong, backends: [big]}
routes:
  auto: {}
  local: {tiers: [cheap, middle]}
  strict: {fallback: none}
  upward: {fallback: up}
  always-big: {tier: strong}
"""


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_policy(text.encode(), source="p.yaml", base_dir=Path("/tmp"))


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return str(info.value).splitlines()


def test_default_policy_loads() -> None:
    """The shipped default policy is valid and names its three tiers."""
    policy = load_policy(Path("policies/default.yaml"))
    assert [t.name for t in policy.tiers] == ["tiny", "local", "remote"]
    assert policy.default_route == "auto"
    assert len(policy.hash) == 12


@pytest.mark.parametrize(
    ("score", "tier", "order"),
    [
        (0.0, "cheap", ["small", "mid", "big"]),
        (0.3, "cheap", ["small", "mid", "big"]),
        (0.31, "middle", ["mid", "big", "small"]),
        (0.99, "strong", ["big", "mid", "small"]),
    ],
)
def test_decide_picks_the_first_tier_that_takes_the_score(
    score: float, tier: str, order: list[str]
) -> None:
    """Tiers are tried cheapest first; fallback goes up, then down to cheaper tiers."""
    policy = parse(BASE)
    decision = policy.decide(policy.route_for("auto"), score)
    assert decision.tier == tier
    assert [c.backend for c in decision.candidates] == order
    assert decision.reasons


def test_route_restrictions_fallback_modes_and_fixed_tiers() -> None:
    """A route can limit tiers, fix one, or change the fallback order."""
    policy = parse(BASE)
    local = policy.decide(policy.route_for("local"), 0.9)
    assert (local.tier, [c.backend for c in local.candidates]) == ("middle", ["mid", "small"])
    strict = policy.decide(policy.route_for("strict"), 0.1)
    assert [c.backend for c in strict.candidates] == ["small"]
    upward = policy.decide(policy.route_for("upward"), 0.5)
    assert [c.backend for c in upward.candidates] == ["mid", "big"]
    fixed = policy.decide(policy.route_for("always-big"), 0.0)
    assert fixed.tier == "strong"
    assert not policy.needs_score(policy.route_for("always-big"))


def test_backend_name_pins_and_unknown_names_list_the_valid_ones() -> None:
    """A backend's name pins it; an unknown model lists routes and backends."""
    policy = parse(BASE)
    pinned = policy.decide(policy.route_for("mid"), None)
    assert pinned.pinned
    assert [c.backend for c in pinned.candidates] == ["mid"]
    with pytest.raises(UnknownRoute) as info:
        policy.route_for("gpt-5")
    assert info.value.valid == [
        "auto",
        "local",
        "strict",
        "upward",
        "always-big",
        "small",
        "mid",
        "big",
    ]
    assert "auto" in str(info.value)


def test_unknown_field_names_path_and_valid_fields() -> None:
    """A typo in a backend is reported at its path with the fields that type accepts."""
    lines = problems(BASE.replace("{type: fake, model: s}", "{type: fake, model: s, modle: x}"))
    assert len(lines) == 1
    assert lines[0].startswith("p.yaml: backends.small.modle: unknown field 'modle'")
    assert "valid fields here: type, model, script" in lines[0]


def test_unknown_top_level_field() -> None:
    """An unknown top-level key is named with the top-level fields."""
    (line,) = problems(BASE + "budgets: {}\n")
    assert line.startswith("p.yaml: budgets: unknown field 'budgets'; valid fields here: version")


def test_cross_references_are_checked() -> None:
    """Unknown backends and tiers, unordered thresholds and a route/backend clash are errors."""
    text = (
        BASE.replace("backends: [mid]", "backends: [midd]")
        .replace("max_score: 0.6", "max_score: 0.2")
        .replace("local: {tiers: [cheap, middle]}", "local: {tiers: [cheap, nope]}")
        .replace("always-big: {tier: strong}", "big: {tier: strong}")
    )
    lines = problems(text)
    assert (
        "p.yaml: tiers[1].backends[0]: unknown backend 'midd' (known: big, mid, small) (line 9)"
        in lines
    )
    assert any(line.startswith("p.yaml: tiers[1].max_score: 0.2 is not above") for line in lines)
    assert (
        "p.yaml: routes.local.tiers[1]: unknown tier 'nope' (known: cheap, middle, strong) "
        "(line 13)" in lines
    )
    assert any(
        line.startswith("p.yaml: routes.big: 'big' is both a route and a backend") for line in lines
    )


def test_wrong_types_and_values_name_the_field() -> None:
    """Bad values are reported with their path and what was given."""
    lines = problems(BASE.replace("max_score: 0.3", "max_score: lots"))
    assert lines[0].startswith("p.yaml: tiers[0].max_score: Input should be a valid number")
    lines = problems(BASE.replace("type: fake, model: s", "type: fakeish, model: s"))
    assert lines[0].startswith("p.yaml: backends.small: unknown backend type 'fakeish'; use one of")
    lines = problems(BASE.replace("version: 1", "version: 2"))
    assert lines[0].startswith("p.yaml: version: Input should be 1")


def test_last_tier_must_take_everything_and_middle_tiers_need_a_ceiling() -> None:
    """The last tier cannot cap the score; earlier tiers must."""
    lines = problems(
        BASE.replace(
            "{name: strong, backends: [big]}", "{name: strong, max_score: 0.9, backends: [big]}"
        )
    )
    assert any("tiers[2].max_score: the last tier takes every score" in line for line in lines)
    lines = problems(BASE.replace("max_score: 0.6, ", ""))
    assert any("tiers[1].max_score: missing" in line for line in lines)


def test_a_try_longer_than_the_whole_request_is_refused() -> None:
    """per_try_s above total_s could never be used: one line naming both, and the fix."""
    (line,) = problems(BASE + "timeouts: {total_s: 60, per_try_s: 90}\n")
    assert line == (
        "p.yaml: timeouts.per_try_s: 90 s is longer than timeouts.total_s (60 s, the deadline "
        "of all tries together), so no try could ever use it: lower per_try_s to 60 or less, "
        "or raise total_s (line 17)"
    )
    assert parse(BASE + "timeouts: {total_s: 60, per_try_s: 60}\n").timeouts.per_try_s == 60


def test_an_unset_per_try_follows_a_shorter_total() -> None:
    """Only total_s given, below per_try_s's default: valid, and a try gets at most total_s."""
    timeouts = parse(BASE + "timeouts: {total_s: 10}\n").timeouts
    assert (timeouts.total_s, timeouts.per_try_s) == (10, 10)
    assert parse(BASE).timeouts.per_try_s == 30


def test_a_repeated_key_is_found_where_its_value_was_taken() -> None:
    """YAML keeps the last of a repeated key's values, so a problem in it is on the last
    one's line (before, the first one's: an operator sent to a line that was fine)."""
    repeated = BASE.replace(
        "  - {name: middle, max_score: 0.6, backends: [mid]}\n",
        "  - name: middle\n    max_score: 0.6\n    max_score: 1.6\n    backends: [mid]\n",
    )
    (line,) = problems(repeated)
    assert line.startswith("p.yaml: tiers[1].max_score: Input should be less than or equal to 1")
    assert line.endswith("(got 1.6) (line 11)")
    twice = BASE.replace(
        "  big: {type: fake, model: b}\n",
        "  big: {type: fake, model: b}\n  big:\n    type: fake\n    modle: b\n",
    )
    (line,) = problems(twice)
    assert line.startswith("p.yaml: backends.big.modle: unknown field 'modle'")
    assert line.endswith("(line 9)")


def test_yaml_syntax_error_gives_line_and_column() -> None:
    """Broken YAML is reported with where it broke."""
    (line,) = problems("version: 1\nbackends: [\n")
    assert line.startswith("p.yaml: line 3 column 1: not valid YAML")


def test_every_problem_names_its_line() -> None:
    """Each problem ends with the line its path is on, so a rejected reload's log line leads
    to it: a misspelt field's own line, a value's in a block or a flow mapping, a list item's, a
    key holding a dot; a missing field at the line of the entry that lacks it; a field the file
    does not have at all (the default route's route) with none."""
    text = BASE.replace("  big: {type: fake, model: b}\n", "  big:\n    type: fake\n    modle: b\n")
    assert problems(text)[0].startswith("p.yaml: backends.big.modle: unknown field 'modle'")
    assert problems(text)[0].endswith("(line 8)")
    block = BASE.replace(
        "  - {name: middle, max_score: 0.6, backends: [mid]}\n",
        "  - name: middle\n    max_score: 1.6\n    backends: [mid]\n",
    )
    (line,) = problems(block)
    assert line.startswith("p.yaml: tiers[1].max_score: Input should be less than or equal to 1")
    assert line.endswith("(got 1.6) (line 10)")
    assert problems(BASE.replace("max_score: 0.6, ", "")) == [
        "p.yaml: tiers[1].max_score: missing: every tier but the last needs a max_score between "
        "0 and 1 (line 9)"
    ]
    dotted = BASE.replace("small:", "gpt-4.1:").replace("[small]", "[gpt-4.1]") + (
        "pricing:\n  backends:\n    gpt-4.1: {usd_per_1m_input: -1}\n"
    )
    (line,) = problems(dotted)
    assert line.startswith("p.yaml: pricing.backends.gpt-4.1.usd_per_1m_input: ")
    assert line.endswith("(line 19)")
    assert problems(BASE.replace("  auto: {}\n", "")) == [
        "p.yaml: default_route: no route named 'auto' (routes: local, strict, upward, always-big)"
    ]


def test_credentials_must_be_env_var_names() -> None:
    """An inline key in api_key_env is refused: credentials are referenced, never inlined."""
    text = BASE.replace(
        "small: {type: fake, model: s}",
        "small: {type: remote, model: openai/x, api_key_env: 'sk-abc123'}",
    )
    (line,) = problems(text)
    assert line.startswith("p.yaml: backends.small.api_key_env: Value error, must be the NAME")
    assert "sk-abc123" not in line  # a mistaken secret is not echoed into logs


@pytest.mark.parametrize(
    ("route", "backends"),
    [
        ("auto", ["small", "mid", "big"]),
        ("local", ["small", "mid"]),
        ("strict", ["small", "mid", "big"]),  # no fallback, but a score can choose each tier
        ("always-big", ["big", "mid", "small"]),  # its fixed tier, then down
        ("only-big", ["big"]),  # a fixed tier without fallback: nothing else, ever
        ("small", ["small"]),  # a pinned backend
    ],
)
def test_reachable_is_every_candidate_decide_can_give(route: str, backends: list[str]) -> None:
    """What a request to a route may be sent to, whatever its score (readiness counts these)."""
    policy = parse(BASE + "  only-big: {tier: strong, fallback: none}\n")
    reachable = policy.reachable(policy.route_for(route))
    assert [c.backend for c in reachable] == backends
    for score in (0.0, 0.3, 0.5, 1.0):
        decided = policy.decide(policy.route_for(route), score).candidates
        assert set(decided) <= set(reachable)


def test_relative_gguf_paths_resolve_against_the_policy_directory(tmp_path: Path) -> None:
    """A tiny model path is relative to the policy file, not to the working directory."""
    path = tmp_path / "p.yaml"
    path.write_text(
        BASE.replace("small: {type: fake, model: s}", "small: {type: tiny, model: models/x.gguf}")
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models/x.gguf").write_bytes(b"GGUF")
    policy = load_policy(path)
    assert policy.backends["small"].model == str(tmp_path / "models/x.gguf")


def test_a_missing_gguf_is_a_problem_naming_the_path_and_the_fix(tmp_path: Path) -> None:
    """A tiny backend whose GGUF is not there is refused at load (policy check, reload), not
    found out by the first request; the line names the resolved path and what to set."""
    path = tmp_path / "p.yaml"
    path.write_text(
        BASE.replace("small: {type: fake, model: s}", "small: {type: tiny, model: gone.gguf}")
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}: backends.small.model: GGUF file not found: ")
    assert str(tmp_path / "gone.gguf") in line
    assert "set `model:` to the path of a .gguf file" in line
    assert "'default'" in line
    (tmp_path / "gone.gguf").mkdir()  # a folder of that name is no better
    with pytest.raises(PolicyError, match="is a directory, not a GGUF file"):
        load_policy(path)


def test_the_gguf_is_looked_up_not_read(tmp_path: Path) -> None:
    """The check is that the file exists: its content is for the backend to load (the check
    stays instant whatever the model's size), and the packaged default needs no file."""
    (tmp_path / "x.gguf").write_bytes(b"not a model at all")
    text = BASE.replace(
        "small: {type: fake, model: s}", "small: {type: tiny, model: x.gguf}"
    ).replace("mid: {type: fake, model: m}", "mid: {type: tiny, model: default}")
    policy = parse_policy(text.encode(), source="p.yaml", base_dir=tmp_path)
    assert policy.backends["small"].model == str(tmp_path / "x.gguf")
    assert policy.backends["mid"].model == "default"


def test_a_missing_artifact_directory_is_a_problem(tmp_path: Path) -> None:
    """An artifact backend's folder must be there, with its config and weights."""
    text = BASE.replace("small: {type: fake, model: s}", "small: {type: artifact, path: saved}")
    with pytest.raises(PolicyError) as info:
        parse_policy(text.encode(), source="p.yaml", base_dir=tmp_path)
    lines = [line for line in str(info.value).splitlines() if "backends.small.path" in line]
    assert len(lines) == 1, str(info.value)
    assert f"{tmp_path / 'saved'} is not a directory" in lines[0]
    assert "save_pretrained" in lines[0]


@pytest.mark.parametrize(
    "path",
    [
        *sorted(Path(".").glob("policies/**/*.yaml")),
        *sorted(Path(".").glob("deploy/**/policy/*.yaml")),  # compose and Kubernetes policies
    ],
    ids=str,
)
def test_every_shipped_policy_is_valid(path: Path) -> None:
    """Every policy file in the repository loads."""
    policy = load_policy(path)
    assert policy.tiers
