"""Expected failures as one line for the user: no tracebacks for outages or usage errors."""

from __future__ import annotations

from typing import Any

from workers.cli.app import EXIT_FAILED, EXIT_USAGE


def describe_failure(exc: BaseException, settings: Any = None) -> str | None:
    """One line for an outage (database, broker), a service error or a model bundle that
    cannot be used; None for anything else."""
    from core.errors import ModelBundleError
    from workers.services.errors import (
        ServiceError,
        describe_database_error,
        hide_password,
        masked_url,
    )

    if isinstance(exc, ServiceError | ModelBundleError):
        return str(exc)
    database_url = _database_url(settings)
    message = describe_database_error(exc, database_url)
    if message is not None:
        return message
    if _is_broker_error(exc):
        url = _secret(getattr(settings, "broker_url", None)) or "?"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"cannot reach the broker at {masked_url(url)}: {hide_password(reason, url)}"
    return None


def exit_code_for(exc: BaseException) -> int:
    from core.errors import ModelBundleError
    from workers.services.errors import UsageError

    return EXIT_USAGE if isinstance(exc, UsageError | ModelBundleError) else EXIT_FAILED


def _database_url(settings: Any) -> str:
    if settings is None:
        try:
            from workers.settings import Settings

            settings = Settings()
        except Exception:  # settings that do not load are reported by whoever loads them
            return "?"
    return str(getattr(settings, "effective_database_url", "?"))


def _secret(value: Any) -> str:
    """A setting's value, read out of a `SecretStr`, to be shown only through `masked_url`."""
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if reveal else value or "")


def _is_broker_error(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError as KombuOperationalError

    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency of the broker transport
        return isinstance(exc, KombuOperationalError)
    return isinstance(exc, KombuOperationalError | RedisConnectionError | RedisTimeoutError)
