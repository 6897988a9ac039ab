"""Job entries keyed by (job, position): two paths with the same bytes are two entries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Under the old key a video was attached once per job, each at its own position, so
    # (job_id, position) is already unique. SQLite cannot alter a primary key: batch mode
    # copies the table.
    with op.batch_alter_table("job_videos", recreate="auto") as batch:
        batch.drop_constraint("pk_job_videos", type_="primary")
        batch.create_primary_key("pk_job_videos", ["job_id", "position"])


def downgrade() -> None:
    # The old key allows one entry per video and job: keep each video's first entry.
    job_videos = sa.table(
        "job_videos",
        sa.column("job_id", sa.String),
        sa.column("video_id", sa.String),
        sa.column("position", sa.Integer),
    )
    first = sa.alias(job_videos, "first")
    later = sa.exists().where(
        first.c.job_id == job_videos.c.job_id,
        first.c.video_id == job_videos.c.video_id,
        first.c.position < job_videos.c.position,
    )
    op.execute(job_videos.delete().where(later))
    with op.batch_alter_table("job_videos", recreate="auto") as batch:
        batch.drop_constraint("pk_job_videos", type_="primary")
        batch.create_primary_key("pk_job_videos", ["job_id", "video_id"])
