"""Tenants and API keys: every job and video belongs to a tenant; completion callbacks.

Adds `tenants` (with the default tenant, which owns every existing row and whatever the CLI
makes), `api_keys` (SHA-256 hashes only) and `callback_attempts`; `jobs` and `videos` get a
`tenant_id`, jobs an Idempotency-Key, a callback URL and its delivery state. A video is one
row per content *within a tenant*: the unique content hash becomes unique per
(tenant, content hash), so erasing one tenant's video never touches another's.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT_ID = "default"
#: Tables whose rows go with their video's, parents before children (as of 0003).
VIDEO_CHILDREN = (
    "job_videos",
    "predictions",
    "attention_maps",
    "segments",
    "segment_persons",
    "segment_predictions",
    "persons",
)


def _keeping_video_children(alter: Callable[[], None]) -> None:
    """Run `alter` on `videos`; on SQLite, keep the rows of the tables that refer to it.

    SQLite changes a table's constraints by copying it to a new table and dropping the old
    one, and with foreign keys on (they are, and cannot be turned off inside the migration's
    transaction) dropping `videos` cascades to every row that refers to it. Those rows are
    copied aside first and put back after.
    """
    if op.get_bind().dialect.name != "sqlite":
        alter()
        return
    for table in VIDEO_CHILDREN:
        op.execute(f"CREATE TEMP TABLE keep_{table} AS SELECT * FROM {table}")
    alter()
    for table in VIDEO_CHILDREN:
        op.execute(f"INSERT INTO {table} SELECT * FROM keep_{table}")
        op.execute(f"DROP TABLE keep_{table}")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("webhook_secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    tenants = sa.table(
        "tenants",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("webhook_secret", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        tenants,
        [
            {
                "id": DEFAULT_TENANT_ID,
                "name": DEFAULT_TENANT_ID,
                "webhook_secret": secrets.token_hex(32),
                "created_at": datetime.now(UTC),
            }
        ],
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"], unique=False)

    tenant_default = sa.text(f"'{DEFAULT_TENANT_ID}'")
    # Columns and indexes only: SQLite adds them in place (recreating `jobs` would cascade
    # away its entries).
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.add_column(
            sa.Column(
                "tenant_id", sa.String(length=32), server_default=tenant_default, nullable=False
            )
        )
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("callback_state", sa.String(length=16), nullable=True))
    op.create_index(
        "uq_jobs_tenant_id_idempotency_key",
        "jobs",
        ["tenant_id", "idempotency_key"],
        unique=True,
    )
    op.create_index("ix_jobs_tenant_id_created_at", "jobs", ["tenant_id", "created_at"])
    op.create_index(op.f("ix_jobs_callback_state"), "jobs", ["callback_state"])

    def per_tenant_content() -> None:
        with op.batch_alter_table("videos", recreate="auto") as batch:
            batch.add_column(
                sa.Column(
                    "tenant_id",
                    sa.String(length=32),
                    server_default=tenant_default,
                    nullable=False,
                )
            )
            batch.drop_constraint("uq_videos_content_hash", type_="unique")
            batch.create_unique_constraint(
                op.f("uq_videos_tenant_id_content_hash"), ["tenant_id", "content_hash"]
            )

    _keeping_video_children(per_tenant_content)

    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_callback_attempts_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_attempts")),
    )
    op.create_index(
        op.f("ix_callback_attempts_job_id"), "callback_attempts", ["job_id"], unique=False
    )


def downgrade() -> None:
    # Content is unique across tenants again: keep each content's oldest video (entries,
    # predictions and the rest of the others go with them, by cascade).
    videos = sa.table(
        "videos",
        sa.column("id", sa.String),
        sa.column("content_hash", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    older = sa.alias(videos, "older")
    later = sa.exists().where(
        older.c.content_hash == videos.c.content_hash,
        sa.or_(
            older.c.created_at < videos.c.created_at,
            sa.and_(older.c.created_at == videos.c.created_at, older.c.id < videos.c.id),
        ),
    )
    op.execute(videos.delete().where(later))
    op.drop_index(op.f("ix_callback_attempts_job_id"), table_name="callback_attempts")
    op.drop_table("callback_attempts")

    def unique_content() -> None:
        with op.batch_alter_table("videos", recreate="auto") as batch:
            batch.drop_constraint(op.f("uq_videos_tenant_id_content_hash"), type_="unique")
            batch.create_unique_constraint(op.f("uq_videos_content_hash"), ["content_hash"])
            batch.drop_column("tenant_id")

    _keeping_video_children(unique_content)
    op.drop_index(op.f("ix_jobs_callback_state"), table_name="jobs")
    op.drop_index("ix_jobs_tenant_id_created_at", table_name="jobs")
    op.drop_index("uq_jobs_tenant_id_idempotency_key", table_name="jobs")
    # SQLite drops columns in place (3.35+) unless they are indexed or constrained.
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.drop_column("callback_state")
        batch.drop_column("callback_url")
        batch.drop_column("idempotency_key")
        batch.drop_column("tenant_id")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
