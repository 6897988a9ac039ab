"""Secrets in the settings never show: not in repr, str, a JSON dump, or a one-line error."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from pydantic import SecretStr

from workers.services.errors import hide_password, masked_url
from workers.settings import Settings

SECRETS = ("brokerpw", "dbpw", "flowerpw")


@pytest.fixture
def settings() -> Settings:
    return Settings(
        broker_url="redis://:brokerpw@127.0.0.1:6379/0",
        database_url="postgresql+psycopg://user:dbpw@db:5432/oceanstream",
        flower_password="flowerpw",
    )


def test_no_secret_in_repr_str_or_dump(settings: Settings) -> None:
    for shown in (repr(settings), str(settings), settings.model_dump_json(), f"{settings}"):
        for secret in SECRETS:
            assert secret not in shown


def test_secrets_are_secret_strings_read_where_used(settings: Settings) -> None:
    assert isinstance(settings.flower_password, SecretStr)
    assert isinstance(settings.broker_url, SecretStr)
    assert isinstance(settings.database_url, SecretStr)
    assert settings.broker_url.get_secret_value() == "redis://:brokerpw@127.0.0.1:6379/0"
    assert settings.effective_database_url == "postgresql+psycopg://user:dbpw@db:5432/oceanstream"
    assert settings.flower_password.get_secret_value() == "flowerpw"


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCEANSTREAM_BROKER_URL", "redis://:envpw@broker:6379/1")
    monkeypatch.setenv("OCEANSTREAM_FLOWER_PASSWORD", "envflower")
    loaded = Settings()
    assert loaded.broker_url.get_secret_value() == "redis://:envpw@broker:6379/1"
    assert loaded.flower_password is not None
    assert loaded.flower_password.get_secret_value() == "envflower"
    assert "envpw" not in repr(loaded) and "envflower" not in repr(loaded)


def test_defaults_need_no_secret() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.broker_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert defaults.effective_database_url.startswith("sqlite:///")
    assert defaults.flower_password is None


def test_masked_url_hides_the_password_and_keeps_the_rest() -> None:
    assert masked_url("redis://:pw@host:6380/2") == "redis://:***@host:6380/2"
    assert masked_url("postgresql+psycopg://u:pw@db/x") == "postgresql+psycopg://u:***@db/x"
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://u:Hash#Leak/5x@db/x", "postgresql+psycopg://u:***@db/x"),
        (
            "postgresql+psycopg://u@db/x?password=Leak5x&a=1",
            "postgresql+psycopg://u@db/x?a=1&password=***",
        ),
        ("postgresql+psycopg://u:Leak5x@db:99999/x", "postgresql+psycopg://u:***@db:99999/x"),
        ("redis://:Hash#Leak5x@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://host:6379/0?password=Leak5x", "redis://host:6379/0?password=***"),
        ("rediss://:x%23Leak5x@host/0", "rediss://:***@host/0"),
        ("postgresql://u:p@[::1]:5/d", "postgresql://u:***@[::1]:5/d"),
    ],
)
def test_masked_url_hides_every_form_of_password(url: str, masked: str) -> None:
    assert masked_url(url) == masked
    assert "Leak5x" not in hide_password(f"failed: {url} ({unquote(url)})", url)


def test_a_broker_failure_line_shows_the_masked_url(settings: Settings) -> None:
    from kombu.exceptions import OperationalError

    from workers.cli.failures import describe_failure

    line = describe_failure(OperationalError("Error 111 connecting"), settings)
    assert line == "cannot reach the broker at redis://:***@127.0.0.1:6379/0: Error 111 connecting"


def test_the_worker_configuration_holds_no_secret(settings: Settings) -> None:
    from workers.celery_app import create_app

    app = create_app(settings)
    assert app.conf.broker_url == "redis://:brokerpw@127.0.0.1:6379/0"  # used, not shown
    for secret in SECRETS:
        assert secret not in repr(app.conf.table(censored=True))
