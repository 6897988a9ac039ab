"""What every request of one API process shares: settings, database, rate limiter, metrics,
the recent key checks and the results it keeps serialized."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.api.auth import KeyCache
    from workers.api.metrics import ApiMetrics
    from workers.api.rate_limit import RateLimiter
    from workers.api.result_cache import ResultCache
    from workers.settings import Settings


@dataclass
class ApiContext:
    settings: Settings
    session_factory: sessionmaker
    limiter: RateLimiter
    metrics: ApiMetrics
    keys: KeyCache
    results: ResultCache
