"""Job request rules, the retry policy, database URLs and settings."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from jobledger.bootstrap import api_config
from jobledger.settings import Settings, SettingsError
from ledger.errors import InvalidJob
from ledger.request import MediaSource, Pin
from ledger.retry import RetryPolicy
from projections.stuck import StuckThresholds
from storage.config import DatabaseURLError, parse_database_url
from tests.conftest import make_new_job


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pin": {"title": "t" * 101}}, "pin.title"),
        ({"pin": {"description": "d" * 801}}, "pin.description"),
        ({"pin": {"alt_text": "a" * 501}}, "pin.alt_text"),
        ({"pin": {"link": "https://x.example/" + "l" * 2048}}, "pin.link"),
        ({"pin": {"link": "javascript:alert(1)"}}, "pin.link"),
        ({"simulate": ["published", "exploded"]}, "simulate[1]"),
        ({"simulate": []}, "simulate"),
        ({"mode": "pinterest", "simulate": ["published"]}, "simulate"),
        ({"mode": "carrier-pigeon"}, "mode"),
        ({"account_id": ""}, "account_id"),
        ({"board_id": " padded "}, "board_id"),
        ({"publish_at": datetime(2026, 1, 1)}, "publish_at"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata.k"),
    ],
)
def test_invalid_job_requests_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        make_new_job(**overrides)
    assert refused.value.field == field


def test_media_source_rules() -> None:
    with pytest.raises(InvalidJob, match=r"pin\.media_source\.source_type"):
        MediaSource("image_base64", "https://x.example/a.png")
    with pytest.raises(InvalidJob, match=r"pin\.media_source\.url"):
        Pin(media_source=MediaSource("image_url", "ftp://x.example/a.png"))


def test_limits_are_inclusive() -> None:
    job = make_new_job(pin={"title": "t" * 100, "description": "d" * 800, "alt_text": "a" * 500})
    assert len(job.pin.title or "") == 100


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = make_new_job(publish_at=datetime(2026, 5, 1, 12, tzinfo=UTC))
    b = make_new_job(publish_at=datetime(2026, 5, 1, 12, tzinfo=UTC))
    c = make_new_job(publish_at=datetime(2026, 5, 1, 12, 0, 1, tzinfo=UTC))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert make_new_job(pin={"title": "x"}).fingerprint() != a.fingerprint()


def test_retry_policy_full_jitter_within_exponential_ceiling() -> None:
    policy = RetryPolicy(max_attempts=6, base_seconds=0.5, cap_seconds=3.0)
    rng = random.Random(42)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (5, 3.0)]:
        delays = [policy.next_delay(attempt, rng=rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling * 0.8  # really jittered up to it
    assert policy.next_delay(6, rng=rng) is None
    assert policy.next_delay(1, retry_after=10.0, rng=rng) == 10.0


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="cap"):
        RetryPolicy(base_seconds=10, cap_seconds=5)


def test_database_urls() -> None:
    lite = parse_database_url("sqlite:///./data/ledger.db")
    assert (lite.kind, lite.path) == ("sqlite", "./data/ledger.db")
    assert parse_database_url("sqlite:////var/lib/ledger.db").path == "/var/lib/ledger.db"
    pg = parse_database_url("postgresql://app:s3cret@db.internal:5433/ledger?schema=prod")
    assert (pg.host, pg.port, pg.dbname, pg.user, pg.schema) == (
        "db.internal",
        5433,
        "ledger",
        "app",
        "prod",
    )
    assert "s3cret" not in pg.redacted_url() and "s3cret" not in repr(pg)
    assert pg.eventsourcing_env()["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"
    assert pg.eventsourcing_env()["CREATE_TABLE"] == "n"
    for bad in [
        "mysql://x/y",
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "postgresql://host/",
        "postgresql://host/db?schema=Robert');DROP",
        "postgresql://host:notaport/db",
    ]:
        with pytest.raises(DatabaseURLError):
            parse_database_url(bad)


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "LEDGER_DATABASE_URL": "sqlite:///x.db",
            "LEDGER_JOB_MAX_ATTEMPTS": "7",
            "LEDGER_JOB_RETRY_BASE_SECONDS": "0.25",
            "LEDGER_JOB_RETRY_CAP_SECONDS": "1.5",
        }
    )
    assert settings.retry_policy() == RetryPolicy(7, 0.25, 1.5)
    assert Settings.from_env({}).database_url == "sqlite:///./ledger.db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEDGER_JOB_MAX_ATTEMPTS", "0"),
        ("LEDGER_JOB_MAX_ATTEMPTS", "five"),
        ("LEDGER_JOB_RETRY_BASE_SECONDS", "-1"),
        ("LEDGER_JOB_RETRY_BASE_SECONDS", "nan"),
        ("LEDGER_JOB_RETRY_CAP_SECONDS", "1"),  # below the default base of 30
        ("LEDGER_DATABASE_URL", "oracle://db"),
        ("LEDGER_STUCK_QUEUED_SECONDS", "-5"),
        ("LEDGER_STUCK_OVERDUE_SECONDS", "soon"),
        ("LEDGER_STUCK_LEASE_GRACE_SECONDS", "inf"),
        ("LEDGER_STUCK_MAX_RETRYING_ATTEMPTS", "-1"),
        ("LEDGER_STUCK_MAX_RETRYING_ATTEMPTS", "2.5"),
        ("LEDGER_READY_MAX_LAG_EVENTS", "-1"),
        ("LEDGER_READY_MAX_LAG_EVENTS", "many"),
        ("LEDGER_METRICS_TOKEN", "too-short"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.rsplit("_", 2)[0]):
        Settings.from_env({name: value})


def test_projection_settings_reach_the_api_config() -> None:
    defaults = api_config(Settings.from_env({}))
    assert defaults.stuck_thresholds == StuckThresholds()
    assert defaults.ready_max_lag_events == 1000
    assert defaults.metrics_token is None

    config = api_config(
        Settings.from_env(
            {
                "LEDGER_STUCK_QUEUED_SECONDS": "90.5",
                "LEDGER_STUCK_OVERDUE_SECONDS": "30",
                "LEDGER_STUCK_LEASE_GRACE_SECONDS": "0",
                "LEDGER_STUCK_MAX_RETRYING_ATTEMPTS": "0",
                "LEDGER_READY_MAX_LAG_EVENTS": "0",
                "LEDGER_METRICS_TOKEN": "scrape-0123456789abcdef",
            }
        )
    )
    assert config.stuck_thresholds == StuckThresholds(
        queued_seconds=90.5, overdue_seconds=30, lease_grace_seconds=0, max_retrying_attempts=0
    )
    assert config.ready_max_lag_events == 0
    assert config.metrics_token == "scrape-0123456789abcdef"
    assert "scrape-0123456789abcdef" not in repr(config)
