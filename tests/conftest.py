"""Shared fixtures: the real services the tests talk to, loaded from `tests/support/`.

A test that needs a service fails in CI (`CI` set) when the service is missing; on a
developer machine it is skipped with the reason (`tests.support.services.service_unavailable`).
"""

pytest_plugins = [
    "tests.support.redis",
    "tests.support.postgres",
    "tests.support.databases",
    "tests.support.cluster",
    "tests.support.s3",
    "tests.support.faces",
    "tests.support.bundles",
]
