"""Shots: the shot changes found in each segment, and which persons a cut bounds.

Adds `segments.shots` (JSON, the video times at which a new shot is first seen in the
segment; NULL for segments analysed before) and `segment_persons.opens_segment` and
`closes_segment` (whether the person is seen in its segment's first and last shot; true for
existing rows, as continuity linked them before). Down drops the three columns. Columns are
added and dropped in place (`recreate="never"`): rebuilding `segment_persons` on SQLite would
delete the segment predictions that hang off it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("segments", recreate="never") as batch:
        batch.add_column(sa.Column("shots", sa.JSON(), nullable=True))
    with op.batch_alter_table("segment_persons", recreate="never") as batch:
        for name in ("opens_segment", "closes_segment"):
            batch.add_column(
                sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true())
            )


def downgrade() -> None:
    with op.batch_alter_table("segment_persons", recreate="never") as batch:
        batch.drop_column("closes_segment")
        batch.drop_column("opens_segment")
    with op.batch_alter_table("segments", recreate="never") as batch:
        batch.drop_column("shots")
