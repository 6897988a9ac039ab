"""Errors the services raise for expected failures, and one-line descriptions of outages."""

from __future__ import annotations

import contextlib
import re
from urllib.parse import quote, unquote, urlsplit


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


#: Query parameters whose values are secrets (`?password=`, `?sslpassword=`, `?token=`, ...).
_SECRET_QUERY = re.compile(
    r"([?&;][^=&;#]*(?:password|passwd|pwd|secret|token)[^=&;#]*=)[^&;]*", re.IGNORECASE
)
_REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "unix")
_SHORTEST_HIDDEN = 4


def masked_url(url: str) -> str:
    """`url` with its password, and any password in its query, as `***`.

    Parsed as its driver parses it: a database URL by SQLAlchemy's `make_url` (whose
    password may hold `#`, `/` or `?`), rendered with `hide_password=True`. A URL it cannot
    parse (a broker URL, a port out of range) is cut at the last `@` of its authority, so
    whatever a parser would take for a password is hidden; and every password any of the
    parsers finds (`secrets_of`) is hidden wherever it appears.
    """
    text = str(url)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return hide_password(text, text)
    rendered = None
    if scheme not in _REDIS_SCHEMES:
        try:
            from sqlalchemy.engine import make_url

            rendered = make_url(text).render_as_string(hide_password=True)
        except Exception:  # unparseable: masked by hand below
            rendered = None
    if rendered is None:
        rendered = _mask_userinfo(text)
    return hide_password(_SECRET_QUERY.sub(r"\1***", rendered), text)


def _mask_userinfo(text: str) -> str:
    scheme, _, rest = text.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return text
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"


def secrets_of(url: str) -> set[str]:
    """Every string a parser of `url` would read as a password (SQLAlchemy's, redis-py's,
    urllib's, the query's), as written and percent-decoded."""
    text = str(url)
    found: set[str] = set()
    scheme, sep, rest = text.partition("://")
    if not sep:
        return found
    userinfo, at, _ = rest.rpartition("@")
    if at and ":" in userinfo:
        found.add(userinfo.split(":", 1)[1])
    found.update(text[m.end(1) : m.end()] for m in _SECRET_QUERY.finditer(text))
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(text)
        found.add(parsed.password or "")
        for name, value in parsed.query.items():
            if _SECRET_QUERY.match(f"?{name}="):
                found.update([value] if isinstance(value, str) else value)
    except Exception:
        pass
    if scheme in _REDIS_SCHEMES:
        try:
            from redis.connection import parse_url

            options = parse_url(f"unix://{rest}" if scheme == "redis+socket" else text)
            found.add(str(options.get("password") or ""))
        except Exception:  # redis-py cannot read it: the URL cannot be used at all
            pass
    with contextlib.suppress(ValueError):  # a port out of range
        found.add(urlsplit(text).password or "")
    found |= {unquote(s) for s in found} | {quote(s, safe="") for s in found}
    found.discard("")
    found.discard("***")
    return found


def port_problem(url: str) -> str | None:
    """Why the port in `url` cannot be used (not a number, out of range); None if it can.

    The message names the port, never the rest of the URL.
    """
    text = str(url)
    _, sep, rest = text.partition("://")
    if not sep:
        return None
    authority = rest.rpartition("@")[2] if "@" in rest else rest
    hostport = re.split(r"[/?#]", authority, maxsplit=1)[0]
    if hostport.startswith("["):  # [IPv6]:port
        hostport = hostport.partition("]")[2]
    if ":" not in hostport:
        return None
    port = hostport.rpartition(":")[2]
    if port == "":
        return None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        return f"the port must be a number from 1 to 65535, got {port[:20]!r}"
    return None


def broker_url_problem(url: str) -> str | None:
    """Why kombu and redis-py cannot use broker URL `url`; None if they can. Never echoes it.

    Both split a URL with urllib: a `#` starts a fragment (the rest of a password that holds
    one is read as the host), and kombu passes query parameters on as keyword arguments, so
    `?password=` collides with the password it parsed (a TypeError).
    """
    text = str(url)
    if "#" in text:
        return "write a '#' in the broker URL as %23 (kombu and redis-py read '#' as the URL's end)"
    if _SECRET_QUERY.search(text):
        return (
            "kombu cannot read a password in the broker URL's query (?password=); "
            "put it before the host: redis://:PASSWORD@HOST:6379/0"
        )
    return port_problem(text)


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
    """`text` (a driver's message about `url`) with every password in the URL as `***`.

    Passwords shorter than `_SHORTEST_HIDDEN` characters are left to `masked_url`'s parsing:
    replaced wherever they occur, they would blank out parts of ordinary words.
    """
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        if len(secret) >= _SHORTEST_HIDDEN:
            text = text.replace(secret, "***")
    return text
