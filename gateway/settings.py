"""Process settings from the environment (``TIERGATE_*``), pydantic-settings at the edge.

Secrets are ``SecretStr`` so a settings dump or log line never shows them. What is checked
before a server starts (folders, exposure) is ``gateway.preflight``; the ``TIERGATE_*`` names
nothing reads (typos) are ``gateway.environment``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.ledger.capacity import DEFAULT_MAX_BYTES as DEFAULT_OUTBOX_MAX_BYTES
from gateway.ledger.capacity import MIN_BYTES as MIN_OUTBOX_BYTES
from gateway.ledger.capacity import parse_size

DEFAULT_POLICY = Path("policies/default.yaml")
# The wheel carries a copy of policies/default.yaml here (pyproject: force-include), so an
# installed gateway started outside the repository has a policy to start with.
BUNDLED_POLICY = Path(__file__).resolve().parent / "policy" / "default.yaml"


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected URL may hold a password; no error message repeats it.
    model_config = SettingsConfigDict(
        env_prefix="TIERGATE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

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
    api_docs: bool = Field(
        default=False,
        description="serve FastAPI's interactive pages /docs (Swagger UI) and /redoc; they load "
        "their JavaScript from a CDN (cdn.jsdelivr.net), so they are blank on a host without "
        "internet access. /openapi.json is served either way",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated client keys, each 'key' or 'key_id:key'",
    )
    admin_key: SecretStr | None = None
    workers: int = Field(default=1, ge=1, le=64, description="gateway processes (serve)")
    drain_s: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="on SIGTERM, how long requests in flight may finish before they are cut: "
        "at least the policy's timeouts.total_s, and the orchestrator's grace period (a "
        "Kubernetes terminationGracePeriodSeconds, compose's stop_grace_period) above it",
    )
    # At most 1 GiB: each request body is read into memory whole, so a bound past that is a
    # typo (a digit too many), not a choice.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024**3)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    watch_policy: bool = Field(default=True, description="reload the policy when its file changes")
    database_url: SecretStr | None = Field(
        default=None,
        description="ledger database: sqlite:///path or postgresql://… (postgres:// is read as "
        "postgresql://); default: SQLite under ./.tiergate/; may hold a password",
    )
    ledger: bool = Field(
        default=True, description="record every request in the ledger (off: benchmarks, dev)"
    )
    outbox_path: Path = Field(
        default=Path(".tiergate/outbox.db"),
        description="local outbox for ledger rows while the database is unreachable",
    )
    outbox_max_bytes: int = Field(
        default=DEFAULT_OUTBOX_MAX_BYTES,
        description="the outbox's bound (bytes, or a size: 512MiB, 1GiB): at it new requests "
        "get 503 ledger_outbox_full and /readyz says unavailable until the database answers; "
        "keep it well under the disk or emptyDir the outbox is on",
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
        le=60_000,  # a bound, not a wait: past a minute (or inf) a stuck Redis holds requests
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

    @field_validator("outbox_max_bytes", mode="before")
    @classmethod
    def _outbox_max_bytes(cls, value: Any) -> Any:
        size = parse_size(value) if isinstance(value, str) else value
        if isinstance(size, int) and size < MIN_OUTBOX_BYTES:
            raise ValueError(
                f"{size} bytes is too small: the outbox needs at least 64KiB ({MIN_OUTBOX_BYTES} "
                f"bytes), and a bound near that stops the gateway after a few dozen requests "
                f"while the database is away; the default is 512MiB"
            )
        return size

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        if not raw.strip():
            return None  # set but empty: the default, as when unset
        return check_database_url(raw.strip())

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        return check_redis_url(raw.strip())

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
            if key in keys:
                raise ValueError(
                    f"TIERGATE_API_KEYS: the key of {key_id!r} is listed twice (also as "
                    f"{keys[key]!r}); give each app its own key"
                )
            if key_id in keys.values():
                raise ValueError(
                    f"TIERGATE_API_KEYS: key id {key_id!r} is given to two keys; the ledger and "
                    f"the limits tell keys apart by id, so give each key its own id"
                )
            if key_id == "admin":
                raise ValueError(
                    "TIERGATE_API_KEYS: key id 'admin' is the admin key's (in the ledger, and "
                    "it may rate any request); give this key another id"
                )
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
        if self.database_url is not None:
            from gateway.ledger.db import display_url

            # The URL as logged (gateway_started), password masked: shown, not redacted.
            raw = self.database_url.get_secret_value()
            if display_url(raw) == raw:
                values.remove(raw)
        return [v for v in values if v]

    def ledger_url(self) -> str:
        from gateway.ledger.db import default_url

        return self.database_url.get_secret_value() if self.database_url else default_url()

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


SQLITE_FORM = "sqlite:///path/to/ledger.db"
POSTGRES_FORM = "postgresql://user:password@host:5432/dbname"
# The drivers tiergate ships: the standard library's sqlite3, and psycopg 3 (SQLAlchemy's
# default for postgresql://).
_DATABASE_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}


def check_database_url(url: str) -> str:
    """``url`` if the ledger can use it, with Heroku's ``postgres://`` read as ``postgresql://``
    (the form many platforms hand out); else ``ValueError`` saying which forms work. No message
    repeats the URL: it may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    forms = f"use {SQLITE_FORM} or {POSTGRES_FORM}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a database URL; {forms}") from None
    dialect, _, driver = parsed.drivername.partition("+")
    if dialect == "postgres":
        dialect, url = "postgresql", "postgresql" + url[len("postgres") :]
    if dialect not in _DATABASE_DRIVERS:
        raise ValueError(
            f"unsupported scheme {parsed.drivername + '://'!r}: the ledger runs on SQLite or "
            f"PostgreSQL; {forms}"
        )
    if driver not in _DATABASE_DRIVERS[dialect]:
        shipped = "psycopg (postgresql:// or postgresql+psycopg://)"
        if dialect == "sqlite":
            shipped = "the built-in sqlite3 (sqlite:///…)"
        raise ValueError(
            f"the database driver {driver!r} is not installed with tiergate; use {shipped}"
        )
    return url


REDIS_FORMS = "redis://host:6379/0, rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock"


def check_redis_url(url: str) -> str:
    """``url`` if redis-py can use it; else ``ValueError`` with the forms that work (the URL,
    which may hold a password, is not repeated)."""
    from redis.connection import parse_url

    if not url:
        raise ValueError(f"empty; unset it for the in-process store, or use {REDIS_FORMS}")
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        shown = f" (not {scheme + '://'!r})" if sep and "@" not in scheme else ""
        raise ValueError(f"not a Redis URL{shown}; use {REDIS_FORMS}")
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except ValueError:
        raise ValueError(
            f"a Redis URL that cannot be read (is the port a number?); use {REDIS_FORMS}"
        ) from None
    return url


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
