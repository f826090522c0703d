"""deploy/compose.yaml and deploy/Dockerfile, checked offline (no Docker engine here): the
services, their healthchecks and start order, the policy mounted as a folder, and every
variable the file reads documented in deploy/.env.example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.policy import load_policy
from tests.deploy.test_kubernetes import SHUTDOWN_MARGIN_S, drain_s

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ONE_SHOT = {"migrate", "ollama-pull"}
LONG_RUNNING = {"gateway", "postgres", "redis", "ollama"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]["test"]
        assert check[0] == "CMD", name
        assert len(check) > 1, name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition["condition"] == expected, (name, dependency)
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert set(gateway["depends_on"]) == {"migrate", "postgres", "redis", "ollama"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["image"] == gateway["image"]
    assert services["ollama-pull"]["depends_on"] == {"ollama": {"condition": "service_healthy"}}


def test_gateways_share_postgres_and_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["gateway"]["environment"]
    assert env["TIERGATE_DATABASE_URL"].startswith("postgresql+psycopg://tiergate:")
    assert env["TIERGATE_DATABASE_URL"].endswith("@postgres:5432/tiergate")
    assert env["TIERGATE_REDIS_URL"] == "redis://redis:6379/0"
    assert (
        services["migrate"]["environment"]["TIERGATE_DATABASE_URL"] == env["TIERGATE_DATABASE_URL"]
    )
    assert set(compose["volumes"]) == {"postgres", "ollama"}


def test_the_policy_is_mounted_as_a_folder(compose: dict[str, Any]) -> None:
    (mount,) = compose["services"]["gateway"]["volumes"]
    source, target, mode = mount.split(":")
    assert (DEPLOY / source).is_dir()
    assert target == "/etc/tiergate/policy"
    assert mode == "ro"
    policy = load_policy(DEPLOY / source / "policy.yaml")
    assert policy.backends["local"].base_url == "http://ollama:11434"  # type: ignore[union-attr]
    # The Dockerfile points TIERGATE_POLICY into that folder.
    assert "TIERGATE_POLICY=/etc/tiergate/policy/policy.yaml" in _dockerfile()


def test_every_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = _env_example()
    assert used <= set(example), used - set(example)
    assert {"TIERGATE_API_KEYS", "TIERGATE_ADMIN_KEY", "OPENAI_API_KEY"} <= set(example)
    assert compose["services"]["gateway"]["env_file"] == ".env"
    pulled = example["OLLAMA_MODEL"]
    policy = load_policy(DEPLOY / "policy" / "policy.yaml")
    assert policy.backends["local"].model == pulled


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_image_runs_as_its_user_with_what_llama_cpp_needs() -> None:
    text = _dockerfile()
    runtime = text.split("\nFROM ", 2)[2]  # the second stage
    assert "libgomp1" in runtime
    assert "USER 10001" in runtime
    assert "chown tiergate:tiergate /var/lib/tiergate" in runtime
    assert "WORKDIR /var/lib/tiergate" in runtime
    assert "HEALTHCHECK" in runtime
    assert "curl" not in runtime  # not in python:3.11-slim
    assert 'ENTRYPOINT ["tini", "--", "tiergate-entrypoint"]' in runtime
    assert "COPY deploy/entrypoint.sh /usr/local/bin/tiergate-entrypoint" in runtime
    assert (DEPLOY / "entrypoint.sh").stat().st_mode & 0o111  # executable in the image too


def test_stopping_a_gateway_lets_every_request_the_policy_allows_finish(
    compose: dict[str, Any],
) -> None:
    """`docker compose stop` / `down` sends SIGTERM and SIGKILLs after stop_grace_period: it
    covers the drain, and the drain covers the policy's longest request (timeouts.total_s)."""
    gateway = compose["services"]["gateway"]
    env = {**_env_example(), **gateway["environment"]}
    literal = {k: str(v) for k, v in env.items() if "${" not in str(v)}
    drain = drain_s(literal)
    total_s = load_policy(DEPLOY / "policy" / "policy.yaml").timeouts.total_s
    assert drain >= total_s, f"the drain ({drain} s) cuts requests the policy allows {total_s} s"
    grace = gateway["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace), grace
    assert int(grace[:-1]) >= drain + SHUTDOWN_MARGIN_S
