"""The `live` status: a video whose segments arrive from a live source (`oceanstream watch`).

Videos and segments take the video statuses, checked by a CHECK constraint on each table;
both constraints are rebuilt with `live` added. No row changes on the way up. On the way
down a video still `live` (a watch that never ended) becomes `failed`, saying so.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12 00:00:00
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("pending", "ingesting", "extracting", "inference", "done", "no_face", "failed")
AFTER = ("pending", "live", "ingesting", "extracting", "inference", "done", "no_face", "failed")
#: Tables whose rows go with a video's or a segment's, parents before children (as of 0004).
VIDEO_CHILDREN = (
    "job_videos",
    "predictions",
    "attention_maps",
    "segments",
    "segment_persons",
    "segment_predictions",
    "persons",
)
ENDED_LIVE = "the live watch never ended (the database was downgraded below revision 0005)"


def _check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"


def _keeping_children(alter: Callable[[], None]) -> None:
    """Run `alter`; on SQLite, keep the rows of the tables that refer to videos or segments.

    SQLite changes a CHECK constraint by copying the table to a new one and dropping the
    old, and with foreign keys on, dropping `videos` (or `segments`) cascades to every row
    that refers to it. Those rows are copied aside first and put back after (see 0004).
    """
    if op.get_bind().dialect.name != "sqlite":
        alter()
        return
    for table in VIDEO_CHILDREN:
        op.execute(f"CREATE TEMP TABLE keep5_{table} AS SELECT * FROM {table}")
    alter()
    for table in VIDEO_CHILDREN:
        op.execute(f"DELETE FROM {table}")
    for table in VIDEO_CHILDREN:
        op.execute(f"INSERT INTO {table} SELECT * FROM keep5_{table}")
        op.execute(f"DROP TABLE keep5_{table}")


def _statuses(statuses: tuple[str, ...]) -> Callable[[], None]:
    def alter() -> None:
        for table in ("videos", "segments"):
            with op.batch_alter_table(table, recreate="auto") as batch:
                batch.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
                batch.create_check_constraint(op.f(f"ck_{table}_status"), _check(statuses))

    return alter


def upgrade() -> None:
    _keeping_children(_statuses(AFTER))


def downgrade() -> None:
    videos = sa.table("videos", sa.column("status", sa.String), sa.column("error", sa.Text))
    op.execute(
        videos.update().where(videos.c.status == "live").values(status="failed", error=ENDED_LIVE)
    )
    _keeping_children(_statuses(BEFORE))
