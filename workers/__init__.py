"""OceanStream's processes and front ends: the Celery app, services, the CLI and the HTTP API."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed distribution's version; "unknown" in a checkout never installed."""
    try:
        return version("oceanstream")
    except PackageNotFoundError:
        return "unknown"
