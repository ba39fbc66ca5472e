"""Configuration from the environment (prefix ``MEDIA_``); built by the caller, never at import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from limits import RateLimitItem, parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from media_api.imaging.formats import CORE_FORMATS, KNOWN_FORMATS, OutputFormat
from media_api.imaging.presets import DEFAULT_PRESETS, Preset, parse_presets
from media_api.imaging.probe import ProbeLimits


def _with_driver(url: str, driver: str) -> str:
    """Accept any spelling of a Postgres URL and pin the driver the caller needs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme.split("+", 1)[0] not in {"postgres", "postgresql"}:
        raise ValueError(f"only PostgreSQL is supported, got {scheme!r}")
    return f"postgresql+{driver}://{rest}"


class Settings(BaseSettings):
    """Every knob of the service; a URL left unset means "start the embedded one" in dev."""

    model_config = SettingsConfigDict(env_prefix="MEDIA_", env_file=".env", extra="ignore")

    # External services. None = not configured: `media-api dev` starts an embedded one.
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "media"
    s3_access_key: str = "media-dev-access"
    s3_secret_key: SecretStr = SecretStr("media-dev-secret-change-me")
    s3_multipart_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)

    # API server.
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_size: int = 10
    # A database that accepts connections but never answers must not hold every request for
    # the driver's default of a minute: past this, a request gets 503 and /readyz says so.
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # On SIGTERM `serve` stops accepting connections and lets requests in flight (an upload
    # still arriving) finish for this long before cancelling them; this plus the cleanup
    # bound (main.CLEANUP_GRACE_SECONDS, 10) must stay under the orchestrator's kill timeout
    # (compose: the api's stop_grace_period).
    shutdown_grace_seconds: int = Field(default=30, ge=0)

    # Embedded local stack (`media-api dev` and the tests).
    data_dir: Path = Path(".media-data")
    dev_postgres_port: int = 54329
    dev_redis_port: int = 63799
    dev_s3_port: int = 8333

    # Uploads.
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=50_000_000, gt=0)
    max_frames: int = Field(default=1000, gt=0)
    # Formats accepted by default; add TIFF, BMP, AVIF or HEIF to widen it.
    allowed_formats: Annotated[frozenset[str], NoDecode] = CORE_FORMATS
    # Uploads are spooled here while they are hashed and validated, then deleted.
    upload_tmp_dir: Path | None = None
    # Decode work, bounded before and during the decode: a JPEG with more scans is refused
    # from a walk over its markers (encoders write 10-20); validation runs in a pool of
    # processes, at most this many at once, each killed past the time budget.
    max_jpeg_scans: int = Field(default=100, ge=1)
    validation_timeout_seconds: float = Field(default=10.0, gt=0)
    max_concurrent_validations: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # An upload waits this long for a free validation slot, then gets 503 with Retry-After.
    validation_wait_seconds: float = Field(default=5.0, ge=0)
    # Decode a POST upload while it arrives, in as many more processes (each followed decode
    # keeps to the same time budget in CPU, and after the last byte in wall time).
    follow_uploads: bool = True

    # Resumable (tus) and direct uploads: an upload untouched this long expires (its bytes and
    # reservation are given back); a request waits this long for another to let go of an
    # upload (then 423); a PATCH body silent this long is treated as a disconnect.
    upload_expiry_seconds: int = Field(default=24 * 3600, ge=1, le=7 * 24 * 3600)
    tus_lock_wait_seconds: float = Field(default=10.0, gt=0)
    tus_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # How long a request's hold on an upload lasts unless renewed (every third of it).
    upload_lease_seconds: float = Field(default=10.0, ge=1)

    # Accounts. No default: `serve` refuses to start without a strong key (`dev` makes one).
    secret_key: SecretStr | None = None
    access_token_ttl_seconds: int = Field(default=1800, gt=0)
    # Per-owner limits (0 disables one). Counted in Redis, shared by every API process.
    rate_limit_requests_per_minute: int = Field(default=1200, ge=0)
    rate_limit_uploads_per_minute: int = Field(default=120, ge=0)
    redis_url: str | None = None  # defaults to the broker when that is Redis
    # A limit whose Redis does not answer in this long lets the request through (fails open).
    rate_limit_timeout_seconds: float = Field(default=0.5, gt=0)
    # Sign-in and sign-up, throttled before any password work (limits' notation, `;` between
    # windows; empty = off): per client address, per account, and failed sign-ins per account
    # (the longer windows make repeated failures back off).
    rate_limit_auth_per_address: Annotated[str, NoDecode] = "10/minute;100/hour"
    rate_limit_login_per_account: Annotated[str, NoDecode] = "10/minute"
    rate_limit_login_failures_per_account: Annotated[str, NoDecode] = "5/minute;20/hour;50/day"
    # Password hashing runs in its own threads, so a login flood cannot starve uploads.
    password_hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # open: anyone may create an account; closed: only `media-api create-user` does.
    signup: Literal["open", "closed"] = "open"
    quota_bytes: int = Field(default=10 * 1024**3, ge=0)  # originals per owner; 0 = unlimited
    # Browser origins allowed to call the API (comma list); empty = no CORS headers at all.
    cors_origins: Annotated[list[str], NoDecode] = []
    cors_allow_credentials: bool = False
    # The web page signs in from a `/#key=mk_...` link (what `media-api dev` prints). Off by
    # default: any site could link a visitor into an account of its choosing.
    web_key_links: bool = False

    # Lifetime of presigned GET URLs in responses and redirects.
    signed_url_ttl_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)

    # Variants (made by the `thumbnails` workers). Presets: name:size[:crop], comma separated;
    # crop = square cover crop, otherwise the longest side is fitted (never upscaled).
    variant_presets: Annotated[tuple[Preset, ...], NoDecode] = DEFAULT_PRESETS
    variant_format: OutputFormat = "webp"

    # Tagging (the `tagging` workers): labels above min confidence, at most top_k of them;
    # an image is flagged for moderation when its NSFW score reaches the threshold.
    tag_min_confidence: float = Field(default=0.15, ge=0, le=1)
    tag_top_k: int = Field(default=5, ge=1, le=50)
    tag_category_min_confidence: float = Field(default=0.3, ge=0, le=1)
    nsfw_threshold: float = Field(default=0.8, ge=0, le=1)
    # Photo facts (the thumbnails job): the GPS position read from photos is stored unless
    # this is false (then it never reaches the database); owners choose whether the API shows
    # it. Near-duplicates: images whose perceptual hashes differ in at most this many of 64
    # bits (docs/near-duplicates.md; above 11 the band index would need too many probes).
    store_location: bool = True
    duplicate_distance: int = Field(default=6, ge=0, le=11)
    # Pending tagging jobs a worker takes together in one model call.
    tag_batch_size: int = Field(default=8, ge=1, le=64)
    # A job another worker took into its batch is left to it this long: its own message waits
    # and looks again (done by then), or takes it over (that worker died mid-batch).
    tag_batch_lease_seconds: float = Field(default=180.0, gt=0)

    # Fairness: each owner's jobs take slots at least this far apart in the order workers
    # claim them, so one owner's burst queues behind other owners' uploads, not ahead.
    job_owner_spacing_seconds: float = Field(default=2.0, ge=0)

    # Job delivery: retries with backoff, then the sweep; a job is failed after max attempts.
    job_max_attempts: int = Field(default=5, ge=1)
    job_retry_backoff_seconds: float = Field(default=2.0, gt=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    # A pending job older than this was probably never published (broker down at upload).
    job_pending_grace_seconds: float = Field(default=120.0, gt=0)
    # A running job not updated for this long lost its worker (killed mid-task).
    job_running_timeout_seconds: float = Field(default=600.0, gt=0)

    # Webhooks: a delivery's timeout; the waits between its attempts (seconds, comma list:
    # Standard Webhooks' schedule, about 27 h in all), after which it fails and the endpoint is
    # turned off; private, loopback and link-local addresses only when allowed (`dev`).
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5.0,
        300.0,
        1800.0,
        7200.0,
        18000.0,
        36000.0,
        36000.0,
    )
    webhook_allow_private: bool = False
    # Live updates: a comment line this often keeps a quiet event stream (and proxies) alive.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)

    # Time limits per task kind (soft: the job fails `processing-timeout`; the hard limit,
    # this grace later, kills the pool process), and the memory after which a pool process is
    # replaced once its task ends.
    thumbnails_time_limit_seconds: float = Field(default=60.0, gt=0)
    tagging_time_limit_seconds: float = Field(default=120.0, gt=0)
    task_kill_grace_seconds: float = Field(default=30.0, gt=0)
    worker_max_memory_mb: int = Field(default=1024, ge=64)

    # The API's /metrics on a port of its own (0 = served with the API): keep it off the
    # public listener.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # Each worker serves Prometheus metrics on this address and port (0 = off): several
    # workers on one host need a port each, so there is no fixed default.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    # One JSON object per line (for log shippers) or plain text (for people).
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    # Readiness probes must answer fast even when a dependency hangs.
    readiness_timeout_seconds: float = 2.0

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        """`MEDIA_WEBHOOK_RETRY_SCHEDULE=5,300,1800`: seconds before each retry."""
        if isinstance(value, str):
            return tuple(float(part) for part in value.replace(" ", "").split(",") if part)
        return value

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _split_formats(cls, value: object) -> object:
        """`MEDIA_ALLOWED_FORMATS=JPEG,PNG,AVIF`: a comma list, case-insensitive, checked."""
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, (list, tuple, set, frozenset)):
            formats = frozenset(str(part).upper() for part in value)
            unknown = formats - KNOWN_FORMATS
            if unknown:
                raise ValueError(
                    f"unknown formats {sorted(unknown)}; known: {sorted(KNOWN_FORMATS)}"
                )
            return formats
        return value

    @field_validator("variant_presets", mode="before")
    @classmethod
    def _parse_presets(cls, value: object) -> object:
        """`MEDIA_VARIANT_PRESETS=thumb:256:crop,medium:1024`, parsed here once for everyone."""
        if isinstance(value, (str, list, tuple)):
            return parse_presets(value)
        return value

    @field_validator(
        "rate_limit_auth_per_address",
        "rate_limit_login_per_account",
        "rate_limit_login_failures_per_account",
    )
    @classmethod
    def _valid_rates(cls, value: str) -> str:
        """`10/minute;100/hour` (the `limits` notation); refused at startup if malformed."""
        parse_rates(value)
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse keys an attacker could guess: short, repetitive or copied from docs."""
        if value is None:
            return None
        secret = value.get_secret_value()
        weak = {"secret", "changeme", "change-me", "password", "development", "dev"}
        if len(secret) < 32 or len(set(secret)) < 10 or secret.lower().strip("-_ ") in weak:
            raise ValueError(
                "MEDIA_SECRET_KEY is too weak: use at least 32 random characters, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_batch(self) -> Settings:
        """A batch still within its time limit must not be taken over (it would run twice)."""
        longest = self.tagging_time_limit_seconds + self.task_kill_grace_seconds
        if self.tag_batch_lease_seconds < longest:
            raise ValueError(
                f"MEDIA_TAG_BATCH_LEASE_SECONDS ({self.tag_batch_lease_seconds:g}) must be at "
                f"least the tagging time limit plus the kill grace ({longest:g})"
            )
        return self

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("MEDIA_CORS_ORIGINS=* cannot be combined with credentials")
        return self

    @property
    def probe_limits(self) -> ProbeLimits:
        """The validation policy: what the API probes uploads against and workers re-check."""
        return ProbeLimits(
            allowed_formats=self.allowed_formats,
            max_pixels=self.max_pixels,
            max_frames=self.max_frames,
            max_jpeg_scans=self.max_jpeg_scans,
        )

    @property
    def jwt_secret(self) -> str:
        """The key access tokens are signed with; the API cannot start without one."""
        if self.secret_key is None:
            raise RuntimeError(
                "MEDIA_SECRET_KEY is not set: the API signs access tokens with it "
                "(`media-api dev` generates one for local use)"
            )
        return self.secret_key.get_secret_value()

    @property
    def rate_limit_redis_url(self) -> str | None:
        """Where rate-limit counters live: MEDIA_REDIS_URL, else a Redis broker, else nowhere
        (then each API process counts on its own)."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def async_database_url(self) -> str:
        """The URL for the API's asyncpg engine."""
        return _with_driver(self.require("database_url"), "asyncpg")

    @property
    def sync_database_url(self) -> str:
        """The URL for migrations and workers, which use psycopg without an event loop."""
        return _with_driver(self.require("database_url"), "psycopg")

    @property
    def celery_result_backend(self) -> str:
        """Redis brokers double as result store; other brokers reply over AMQP (rpc://)."""
        if self.result_backend:
            return self.result_backend
        broker = self.require("broker_url")
        return broker if broker.startswith(("redis://", "rediss://")) else "rpc://"

    def require(self, name: str) -> str:
        """The value of a URL setting that must be configured for the caller to run."""
        value = getattr(self, name)
        if not value:
            env = f"MEDIA_{name.upper()}"
            raise RuntimeError(f"{env} is not set (run `media-api dev` for a local stack)")
        return str(value)


def parse_rates(text: str) -> list[RateLimitItem]:
    """`10/minute;100/hour` as rate items; empty text is no limit."""
    if not text.strip():
        return []
    try:
        return list(parse_many(text))
    except ValueError as exc:
        raise ValueError(f"not a rate limit: {text!r} (write e.g. 10/minute;100/hour)") from exc
