"""One settings model, read from ``INVSAGA_*`` environment variables, shared by worker, API and CLI."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from invsaga.domain.errors import ConfigurationError
from invsaga.domain.stock import AllocationPolicy, AllocationStrategy


def to_asyncpg_url(dsn: str) -> URL:
    """Accept the usual ``postgresql://`` DSNs and point SQLAlchemy at asyncpg."""
    try:
        url = make_url(dsn)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {dsn!r}") from exc
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"expected a postgresql:// URL, got {url.drivername!r}")
    if not url.host and not url.query.get("host"):
        raise ValueError(f"database URL has no host: {dsn!r}")
    if not url.database:
        raise ValueError(f"database URL names no database: {dsn!r}")
    return url.set(drivername="postgresql+asyncpg")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVSAGA_", extra="ignore")
    _loaded_from: str = PrivateAttr("overrides given in code")

    shard_dsns: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated Postgres DSNs, one per inventory shard."
    )
    core_dsn: str = Field("", description="Postgres DSN of the catalog and orders database.")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "inventory-saga"
    # TLS to Temporal (see invsaga/temporal/configured.py): on with the system's CAs, or with a private
    # CA; a client certificate and key for mTLS. An API key (Temporal Cloud) turns TLS on by itself.
    temporal_tls: bool = False
    temporal_tls_ca_file: str = ""
    temporal_tls_cert_file: str = ""
    temporal_tls_key_file: str = ""
    temporal_tls_server_name: str = ""
    temporal_api_key: SecretStr = SecretStr("")
    #: ID:BASE64KEY entries; the first encrypts, all decrypt (invsaga/temporal/codec.py). Empty: off.
    payload_keys: SecretStr = SecretStr("")
    #: A file holding the same entries, one per line (a mounted secret); used when payload_keys is empty.
    payload_keys_file: str = ""

    payment_url: str = "http://127.0.0.1:8081"
    payment_timeout_seconds: float = Field(5.0, gt=0)

    hold_ttl_seconds: int = Field(900, gt=0)
    checkout_payment_deadline_seconds: int = Field(300, gt=0)

    # Checkout lines without a location are allocated over the SKU's locations (invsaga/store/allocation.py).
    allocation_strategy: AllocationStrategy = AllocationStrategy.PRIORITY
    #: Comma-separated: the locations the priority strategy tries first, in order; the rest follow by name.
    allocation_priority: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["main"])

    pool_size: int = Field(10, ge=1, le=200)

    # Worker process.
    worker_max_concurrent_activities: int = Field(100, ge=1)
    worker_max_concurrent_workflow_tasks: int = Field(100, ge=1)
    worker_shutdown_grace_seconds: float = Field(30.0, ge=0)
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 disables it.")
    worker_health_port: int = Field(0, ge=0, le=65535, description="Health endpoint port; 0 disables it.")
    #: Worker Versioning: both set means the worker joins this deployment with this build id.
    worker_deployment_name: str = ""
    worker_build_id: str = ""
    #: OTLP endpoint for traces (needs the `otel` extra); empty disables tracing.
    otel_endpoint: str = ""

    #: The hold sweeper's Temporal Schedule (workers create it). Each checkout ends its own holds, so the
    #: sweeper only frees those of a terminated workflow: past their TTL, within this interval.
    sweep_every_seconds: int = Field(300, ge=10)

    # The order reconciler's Temporal Schedule (workers create it; `invsaga reconcile` runs it by hand).
    reconcile_every_seconds: int = Field(300, ge=10)
    #: Off: the scheduled run only reports. On: it also applies the safe, idempotent fixes.
    reconcile_repair: bool = False
    #: How far back the scheduled run reads orders; 0 reads them all. Orders holding stock always count.
    reconcile_since_seconds: int = Field(86_400, ge=0)

    # The event relay (invsaga/events/relay.py): a worker component, or `invsaga relay` on its own.
    #: Off: this worker runs no relay (run one elsewhere; at least one must run for events to flow).
    relay_enabled: bool = True
    relay_poll_seconds: float = Field(0.2, gt=0, le=60)
    relay_batch: int = Field(500, ge=1, le=10_000)
    #: Prometheus port of the relay's own metrics (deliveries, lag); 0 disables it.
    relay_metrics_port: int = Field(0, ge=0, le=65535)
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    #: Deliveries in flight at once per webhook and shard, each for another SKU (a SKU's stay in order).
    webhook_concurrency: int = Field(16, ge=1, le=256)
    #: A failed delivery is retried after base * 2^(attempts-1) seconds, at most max.
    webhook_retry_base_seconds: float = Field(1.0, gt=0)
    webhook_retry_max_seconds: float = Field(300.0, gt=0)
    #: Outbox rows older than this that every webhook has passed are deleted.
    event_retention_seconds: int = Field(7 * 86_400, ge=0)
    event_prune_every_seconds: int = Field(300, ge=1)

    # HTTP API process.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(1, ge=1)
    #: Comma-separated API key entries, stored hashed (see invsaga/api/auth.py for the format).
    api_keys: str = ""

    @field_validator("shard_dsns", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("shard_dsns")
    @classmethod
    def _valid_shards(cls, value: list[str]) -> list[str]:
        for index, dsn in enumerate(value):
            try:
                to_asyncpg_url(dsn)
            except ValueError as exc:
                raise ValueError(f"shard {index}: {exc}") from exc
        if len(set(value)) != len(value):
            raise ValueError("the same DSN is listed twice; every shard needs its own database")
        return value

    @field_validator("core_dsn")
    @classmethod
    def _valid_core(cls, value: str) -> str:
        if value:
            to_asyncpg_url(value)
        return value

    @field_validator("allocation_priority", mode="before")
    @classmethod
    def _split_priority(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allocation_priority")
    @classmethod
    def _valid_priority(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a location is listed twice")
        AllocationPolicy(priority=tuple(value))  # the location code rule
        return value

    @property
    def allocation_policy(self) -> AllocationPolicy:
        return AllocationPolicy(strategy=self.allocation_strategy, priority=tuple(self.allocation_priority))

    @cached_property
    def shard_urls(self) -> list[URL]:
        if not self.shard_dsns:
            raise ConfigurationError("INVSAGA_SHARD_DSNS is not set: list one Postgres DSN per shard")
        return [to_asyncpg_url(dsn) for dsn in self.shard_dsns]

    @cached_property
    def core_url(self) -> URL:
        if not self.core_dsn:
            raise ConfigurationError("INVSAGA_CORE_DSN is not set: give the catalog database DSN")
        return to_asyncpg_url(self.core_dsn)

    @property
    def loaded_from(self) -> str:
        """Where this configuration came from, for a process's first log line."""
        return self._loaded_from

    @property
    def hold_outlives_payment(self) -> bool:
        return self.hold_ttl_seconds > self.checkout_payment_deadline_seconds


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning pydantic's validation report into one readable
    ConfigurationError. A worker and the API use this, and only this: whatever folder they start in,
    what they connect to is what their environment says."""
    return load_settings_over({}, source="the environment (INVSAGA_*)", **overrides)


def load_settings_over(defaults: Mapping[str, str], *, source: str, **overrides: object) -> Settings:
    """Settings from ``defaults`` (setting name -> value), then ``overrides``, both taking precedence
    over the environment; ``source`` is what the process's first log line says it loaded."""
    try:
        settings = Settings(**{**defaults, **overrides})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"INVSAGA_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
    if not settings.hold_outlives_payment:
        raise ConfigurationError(
            "INVSAGA_HOLD_TTL_SECONDS must exceed INVSAGA_CHECKOUT_PAYMENT_DEADLINE_SECONDS, "
            "or the sweeper could free stock a live checkout still owns"
        )
    settings._loaded_from = source
    return settings
