"""Settings: env prefix, URL normalisation, required URLs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from media_api.imaging.presets import Preset
from media_api.settings import Settings


def test_reads_media_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_S3_BUCKET", "photos")
    monkeypatch.setenv("S3_BUCKET", "not-ours")
    assert Settings().s3_bucket == "photos"


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db:5432/media",
        "postgresql://u:p@db:5432/media",
        "postgresql+psycopg://u:p@db:5432/media",
        "postgresql+asyncpg://u:p@db:5432/media",
    ],
)
def test_database_url_gets_the_driver_each_side_needs(url: str) -> None:
    settings = Settings(database_url=url)
    assert settings.async_database_url == "postgresql+asyncpg://u:p@db:5432/media"
    assert settings.sync_database_url == "postgresql+psycopg://u:p@db:5432/media"


def test_non_postgres_url_is_refused() -> None:
    with pytest.raises(ValueError, match="only PostgreSQL"):
        _ = Settings(database_url="mysql://u@db/media").async_database_url


def test_missing_url_names_the_variable() -> None:
    with pytest.raises(RuntimeError, match="MEDIA_BROKER_URL"):
        Settings(broker_url=None).require("broker_url")


@pytest.mark.parametrize(
    ("broker", "backend"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("amqp://guest:guest@127.0.0.1:5672//", "rpc://"),
    ],
)
def test_result_backend_follows_the_broker(broker: str, backend: str) -> None:
    assert Settings(broker_url=broker).celery_result_backend == backend


def test_allowed_formats_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_ALLOWED_FORMATS", "jpeg, PNG,avif")
    assert Settings().allowed_formats == frozenset({"JPEG", "PNG", "AVIF"})


def test_unknown_format_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_ALLOWED_FORMATS", "JPEG,SVG")
    with pytest.raises(ValueError, match="SVG"):
        Settings()


def test_a_tagging_lease_shorter_than_a_batch_may_run_is_refused() -> None:
    with pytest.raises(ValidationError, match="MEDIA_TAG_BATCH_LEASE_SECONDS"):
        Settings(tag_batch_lease_seconds=60, tagging_time_limit_seconds=120)
    assert (
        Settings(tag_batch_lease_seconds=60, tagging_time_limit_seconds=20).tag_batch_lease_seconds
        == 60
    )


def test_variant_presets_are_parsed_once_into_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_VARIANT_PRESETS", "thumb:128:crop, poster:4000")
    assert Settings().variant_presets == (Preset("thumb", 128, True), Preset("poster", 4000, False))


@pytest.mark.parametrize(
    "spec", ["", "thumb", "thumb:big", "thumb:0", "-x:10", "a:1,a:2", "a:1:fit"]
)
def test_a_bad_preset_is_refused_at_startup(spec: str) -> None:
    with pytest.raises(ValidationError, match="preset"):
        Settings(variant_presets=spec)


def test_probe_limits_follow_the_settings() -> None:
    settings = Settings(allowed_formats="jpeg,heif", max_pixels=1000, max_jpeg_scans=7)
    limits = settings.probe_limits
    assert limits.allowed_formats == frozenset({"JPEG", "HEIF"})
    assert (limits.max_pixels, limits.max_frames, limits.max_jpeg_scans) == (1000, 1000, 7)
    assert settings.model_copy(update={"max_pixels": 5}).probe_limits.max_pixels == 5
