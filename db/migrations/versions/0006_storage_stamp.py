"""A video's storage stamp: the stored object's size and version, recorded when it is stored.

Segment stages compare it with what the store reports before reading (one metadata request)
instead of hashing the whole video again. Rows stored before this revision have none; their
ingest hashes the copy once, as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-13 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("videos", sa.Column("storage_stamp", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A plain ALTER TABLE on both backends (SQLite has dropped a column in place since 3.35):
    # SQLite's copy-and-drop of `videos` would cascade to every row that refers to it.
    op.drop_column("videos", "storage_stamp")
