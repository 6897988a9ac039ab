"""`oceanstream keys`: keys made, listed and revoked, and a tenant's webhook secret shown and
rotated, on the embedded default (SQLite in the home folder)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.helpers import assert_one_line_error, oceanstream
from workers.cli.app import EXIT_USAGE


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_keys_and_the_webhook_secret_from_the_cli(tmp_path: Path) -> None:
    key = last_line(oceanstream(tmp_path, "keys", "create", "--tenant", "acme"))
    assert key.startswith("os_")
    listed = oceanstream(tmp_path, "keys", "list", "--json")
    (entry,) = json.loads(listed.stdout)
    assert (entry["tenant"], entry["admin"], entry["revoked"]) == ("acme", False, False)
    assert key.startswith(entry["prefix"]) and key not in listed.stdout

    first = last_line(oceanstream(tmp_path, "keys", "webhook-secret", "--tenant", "acme"))
    assert len(first) >= 32
    assert last_line(oceanstream(tmp_path, "keys", "webhook-secret", "--tenant", "acme")) == first
    rotated = last_line(
        oceanstream(tmp_path, "keys", "webhook-secret", "--tenant", "acme", "--rotate")
    )
    assert rotated != first and len(rotated) == len(first)
    assert last_line(oceanstream(tmp_path, "keys", "webhook-secret", "--tenant", "acme")) == rotated

    unknown = oceanstream(tmp_path, "keys", "webhook-secret", "--tenant", "nobody", "--rotate")
    assert_one_line_error(unknown, EXIT_USAGE, "no tenant named 'nobody'")
    revoked = oceanstream(tmp_path, "keys", "revoke", entry["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(oceanstream(tmp_path, "keys", "list", "--json").stdout)[0]["revoked"]
    table = oceanstream(tmp_path, "keys", "list")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.strip().splitlines()
    assert header.split() == ["ID", "TENANT", "KEY", "CREATED", "(UTC)", "FLAGS"]
    assert row.startswith(entry["id"]) and row.endswith("revoked") and "acme" in row
    assert row.index("acme") == header.index("TENANT")
