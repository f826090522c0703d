"""Process settings from the environment (``TIERGATE_*``), pydantic-settings at the edge.

Secrets are ``SecretStr`` so a settings dump or log line never shows them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POLICY = Path("policies/default.yaml")
# The wheel carries a copy of policies/default.yaml here (pyproject: force-include), so an
# installed gateway started outside the repository has a policy to start with.
BUNDLED_POLICY = Path(__file__).resolve().parent / "policy" / "default.yaml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIERGATE_", extra="ignore", frozen=True)

    policy: Path = Field(
        default=DEFAULT_POLICY,
        validate_default=True,
        description="policy YAML (default: policies/default.yaml in the working directory, else "
        "the copy inside the installed package)",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    ops_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="a second port, on the same host, serving only /healthz, /readyz and /metrics, "
        "with no key: for probes and Prometheus scrapes (unset: none)",
    )
    open_ops: bool = Field(
        default=False,
        description="serve /readyz and /metrics without a key on the main port too (/healthz "
        "always is); they show backend names and states, and counters, never keys or prompts",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated client keys, each 'key' or 'key_id:key'",
    )
    admin_key: SecretStr | None = None
    workers: int = Field(default=1, ge=1, le=64, description="gateway processes (serve)")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    watch_policy: bool = Field(default=True, description="reload the policy when its file changes")
    database_url: SecretStr | None = Field(
        default=None,
        description="ledger database (default: SQLite under ./.tiergate/); may hold a password",
    )
    ledger: bool = Field(
        default=True, description="record every request in the ledger (off: benchmarks, dev)"
    )
    outbox_path: Path = Field(
        default=Path(".tiergate/outbox.db"),
        description="local outbox for ledger rows while the database is unreachable",
    )
    ledger_insert_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="a ledger insert not answered within this is given up: its rows go to the "
        "outbox (a frozen database is noticed)",
    )
    journal: bool = Field(
        default=True,
        description="write every ledger row to a local write-ahead journal before the answer "
        "ends, so a killed process loses none (off: a crash can lose the last ~0.2 s of rows)",
    )
    journal_dir: Path | None = Field(
        default=None,
        description="where each gateway process keeps its journal, on local disk (default: "
        "a journal/ folder beside the outbox)",
    )
    journal_sync: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: survives the process being killed; full: also a power cut, at an "
        "fsync per group commit",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis for the response cache and the prefix registry, shared by every "
        "gateway replica (unset: an in-process store)",
    )
    redis_timeout_ms: float = Field(
        default=50.0, gt=0, le=5000, description="bound on every Redis call; then go uncached"
    )
    governance_timeout_ms: float = Field(
        default=1000.0,
        gt=0,
        description="bound on each Redis call for rate limits and budget holds; past it the "
        "process keeps its own until Redis answers (generous: a spurious timeout under load "
        "would let each process spend the whole limit)",
    )
    governance_leases: bool = Field(
        default=True,
        description="let each replica admit from slices of large limits it took from Redis "
        "beforehand (no round trip per request; gateway/governance/leases.py says the rule); "
        "false: every governed request waits for Redis's decision",
    )
    keys_refresh_s: float = Field(
        default=2.0,
        gt=0,
        le=5.0,
        description="how often virtual keys are re-read from the ledger database",
    )
    trace_content: bool = Field(
        default=False,
        description="record prompt and answer text on trace spans (traces are on when "
        "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set); off: never",
    )
    metrics_key_labels: bool = Field(
        default=False,
        description="add a key label (the key id, never the key) to the token and cost "
        "metrics: one series per key, so only with a bounded number of keys",
    )

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: Path) -> Path:
        if value == DEFAULT_POLICY and not value.exists() and BUNDLED_POLICY.is_file():
            return BUNDLED_POLICY
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _ops_port(self) -> Settings:
        if self.ops_port is not None and self.ops_port == self.port:
            raise ValueError("TIERGATE_OPS_PORT must differ from TIERGATE_PORT")
        return self

    def journal_path(self) -> Path:
        return self.journal_dir or self.outbox_path.parent / "journal"

    def client_keys(self) -> dict[str, str]:
        """Key value → key id. A bare key gets an id derived from its hash (safe to log)."""
        if self.api_keys is None:
            return {}
        keys: dict[str, str] = {}
        for raw in self.api_keys.get_secret_value().split(","):
            item = raw.strip()
            if not item:
                continue
            key_id, sep, key = item.partition(":")
            if not sep:
                key, key_id = item, key_id_for(item)
            if not key:
                raise ValueError(f"TIERGATE_API_KEYS: key id {key_id!r} has an empty key")
            keys[key] = key_id
        return keys

    def secrets(self) -> list[str]:
        """Every secret value, for the log redactor."""
        values = list(self.client_keys())
        if self.admin_key is not None:
            values.append(self.admin_key.get_secret_value())
        for url in (self.database_url, self.redis_url):
            if url is not None:
                values.append(url.get_secret_value())
                password = _password(url.get_secret_value())
                if password:
                    values.append(password)
        return [v for v in values if v]

    def ledger_url(self) -> str:
        from gateway.ledger.db import default_url

        return self.database_url.get_secret_value() if self.database_url else default_url()

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def key_id_for(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ExposureError(RuntimeError):
    """Refusing to listen on a non-loopback address without API keys."""


def check_exposure(settings: Settings) -> None:
    # With an admin key every route needs a key (virtual keys are made with it).
    if not settings.client_keys() and settings.admin_key is None and not settings.loopback_only:
        raise ExposureError(
            f"refusing to listen on {settings.host} without API keys: anyone who can reach it "
            f"could spend your providers' credit. Set TIERGATE_API_KEYS (and TIERGATE_ADMIN_KEY), "
            f"or listen on 127.0.0.1"
        )
