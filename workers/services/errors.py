"""Errors the services raise for expected failures, and one-line descriptions of outages."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class ServiceError(Exception):
    """An expected failure with a message fit to show a user as is."""


class UsageError(ServiceError):
    """The request names something that does not exist or is ambiguous (exit code 2)."""


class UnknownJob(UsageError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class AmbiguousVideoId(UsageError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        super().__init__(
            f"video id prefix {prefix!r} is ambiguous; it matches {', '.join(candidates)}"
        )
        self.candidates = candidates


class Unreachable(ServiceError):
    """A service the command needs (broker, database) cannot be used right now (exit code 1)."""


def masked_url(url: str) -> str:
    """`url` with any password replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def describe_database_error(exc: BaseException, database_url: str) -> str | None:
    """One line for a database that is locked or cannot be reached; None for other errors."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if not isinstance(exc, DBAPIError | OperationalError):
        return None
    original = getattr(exc, "orig", None) or exc
    first_line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    if "database is locked" in first_line or "database table is locked" in first_line:
        return "database is locked (another process holds a write lock); try again"
    if not isinstance(exc, OperationalError) and not getattr(exc, "connection_invalidated", False):
        return None  # a programming error (a constraint, bad SQL): let it surface
    reason = hide_password(first_line, database_url)
    return f"cannot use the database at {masked_url(database_url)}: {reason}"


def hide_password(text: str, url: str) -> str:
    """`text` (a driver's message about `url`) with the URL's password, if any, as `***`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text
