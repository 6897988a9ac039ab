"""Segments and persons: a video is analysed as windows, each holding persons with their scores.

Adds `segments`, `segment_persons`, `segment_predictions` and `persons` (the video-level
aggregates). Nothing existing changes: `predictions` and `attention_maps` stay the video's
headline result. Existing rows are mapped to the new tables as a one-segment, one-person video:
every video gets segment 0 spanning it; a video with predictions gets person 0 in that segment
(one person, whatever the number of model versions that scored it), one segment prediction and
one aggregate per prediction, with the same scores and attention.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIDEO_STATUSES = ("pending", "ingesting", "extracting", "inference", "done", "no_face", "failed")
TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


def _traits() -> list[sa.Column]:
    return [sa.Column(name, sa.Double(), nullable=False) for name in TRAITS]


def upgrade() -> None:
    _create_tables()
    _map_existing_rows()


def _create_tables() -> None:
    statuses = ", ".join(f"'{status}'" for status in VIDEO_STATUSES)
    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("video_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("faces_found", sa.Integer(), nullable=True),
        sa.Column("persons", sa.Integer(), nullable=True),
        sa.Column("faces_ready", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("flow_ready", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deliveries", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_segments_status")),
        sa.ForeignKeyConstraint(
            ["video_id"],
            ["videos.id"],
            name=op.f("fk_segments_video_id_videos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("video_id", "index", name=op.f("uq_segments_video_id_index")),
    )
    op.create_index(op.f("ix_segments_status"), "segments", ["status"], unique=False)

    op.create_table(
        "segment_persons",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("person", sa.Integer(), nullable=True),
        sa.Column("face_frames", sa.Integer(), nullable=False),
        sa.Column("first_box", sa.JSON(), nullable=True),
        sa.Column("last_box", sa.JSON(), nullable=True),
        sa.Column("region", sa.JSON(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_persons_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_persons")),
        sa.UniqueConstraint(
            "segment_id", "index", name=op.f("uq_segment_persons_segment_id_index")
        ),
    )

    op.create_table(
        "segment_predictions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("segment_person_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("model_trained", sa.Boolean(), nullable=False),
        sa.Column("attention_shape", sa.JSON(), nullable=True),
        sa.Column("attention_dtype", sa.String(length=16), nullable=True),
        sa.Column("attention_data", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *_traits(),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["model_versions.version"],
            name=op.f("fk_segment_predictions_model_version_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["segment_person_id"],
            ["segment_persons.id"],
            name=op.f("fk_segment_predictions_segment_person_id_segment_persons"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_predictions")),
        sa.UniqueConstraint(
            "segment_person_id",
            "model_version",
            name=op.f("uq_segment_predictions_segment_person_id_model_version"),
        ),
    )

    op.create_table(
        "persons",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("video_id", sa.String(length=32), nullable=False),
        sa.Column("person", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("spread", sa.JSON(), nullable=False),
        sa.Column("face_frames", sa.Integer(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("first_s", sa.Double(), nullable=False),
        sa.Column("last_s", sa.Double(), nullable=False),
        sa.Column("main", sa.Boolean(), nullable=False),
        sa.Column("model_trained", sa.Boolean(), nullable=False),
        *_traits(),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["model_versions.version"],
            name=op.f("fk_persons_model_version_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["video_id"],
            ["videos.id"],
            name=op.f("fk_persons_video_id_videos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persons")),
        sa.UniqueConstraint(
            "video_id",
            "person",
            "model_version",
            name=op.f("uq_persons_video_id_person_model_version"),
        ),
    )


# Lightweight tables: the migration must not depend on `db.models`, which will change.
videos = sa.table(
    "videos",
    *(
        sa.column(name)
        for name in (
            "id",
            "status",
            "error",
            "duration_s",
            "frames",
            "faces_found",
            "faces_ready",
            "flow_ready",
            "timings",
            "created_at",
            "updated_at",
        )
    ),
)
predictions = sa.table(
    "predictions",
    *(sa.column(name) for name in ("id", "video_id", "model_version", "model_trained")),
    *(sa.column(name) for name in TRAITS),
    sa.column("created_at"),
)
attention_maps = sa.table(
    "attention_maps", *(sa.column(name) for name in ("prediction_id", "shape", "dtype", "data"))
)
segments = sa.table(
    "segments",
    *(
        sa.column(name)
        for name in (
            "id",
            "video_id",
            "index",
            "start_s",
            "end_s",
            "status",
            "error",
            "frames",
            "faces_found",
            "faces_ready",
            "flow_ready",
            "deliveries",
            "timings",
            "created_at",
            "updated_at",
        )
    ),
)
segment_persons = sa.table(
    "segment_persons",
    *(sa.column(name) for name in ("id", "segment_id", "index", "person", "face_frames")),
)
segment_predictions = sa.table(
    "segment_predictions",
    *(
        sa.column(name)
        for name in (
            "segment_person_id",
            "model_version",
            "model_trained",
            "attention_shape",
            "attention_dtype",
            "attention_data",
            "created_at",
        )
    ),
    *(sa.column(name) for name in TRAITS),
)
persons = sa.table(
    "persons",
    *(
        sa.column(name)
        for name in (
            "video_id",
            "person",
            "model_version",
            "spread",
            "face_frames",
            "segments",
            "first_s",
            "last_s",
            "main",
            "model_trained",
        )
    ),
    *(sa.column(name) for name in TRAITS),
)


def _new_segment_id() -> sa.ColumnElement[str]:
    """A random 32-hex-digit id per row, as `db.models.new_id` makes them.

    Generated by the database, so the mapping stays INSERT ... SELECT (and works offline).
    """
    if op.get_context().dialect.name == "postgresql":
        return sa.func.md5(sa.func.concat(sa.func.random(), sa.func.clock_timestamp(), videos.c.id))
    return sa.func.lower(sa.func.hex(sa.func.randomblob(16)))


def _json(value: str) -> sa.ColumnElement[object]:
    """A JSON constant in SQL (a bound JSON value cannot be rendered by `--sql`)."""
    cast = "::json" if op.get_context().dialect.name == "postgresql" else ""
    return sa.literal_column(f"'{value}'{cast}")


def _map_existing_rows() -> None:
    duration = sa.func.coalesce(videos.c.duration_s, 0.0)
    faces = sa.func.coalesce(videos.c.faces_found, 0)
    op.execute(
        segments.insert().from_select(
            [c.name for c in segments.c],
            sa.select(
                _new_segment_id(),
                videos.c.id,
                sa.literal(0),
                sa.literal(0.0),
                duration,
                videos.c.status,
                videos.c.error,
                videos.c.frames,
                videos.c.faces_found,
                videos.c.faces_ready,
                videos.c.flow_ready,
                _json("{}"),
                videos.c.timings,
                videos.c.created_at,
                videos.c.updated_at,
            ),
        )
    )
    # One person per scored video, however many model versions scored it.
    scored = sa.exists().where(predictions.c.video_id == videos.c.id)
    op.execute(
        segment_persons.insert().from_select(
            ["segment_id", "index", "person", "face_frames"],
            sa.select(segments.c.id, sa.literal(0), sa.literal(0), faces)
            .join(videos, videos.c.id == segments.c.video_id)
            .where(segments.c["index"] == 0, scored),
        )
    )
    traits = [predictions.c[name] for name in TRAITS]
    op.execute(
        segment_predictions.insert().from_select(
            [c.name for c in segment_predictions.c],
            sa.select(
                segment_persons.c.id,
                predictions.c.model_version,
                predictions.c.model_trained,
                attention_maps.c.shape,
                attention_maps.c.dtype,
                attention_maps.c.data,
                predictions.c.created_at,
                *traits,
            )
            .join(segments, segments.c.video_id == predictions.c.video_id)
            .join(segment_persons, segment_persons.c.segment_id == segments.c.id)
            .outerjoin(attention_maps, attention_maps.c.prediction_id == predictions.c.id)
            .where(segments.c["index"] == 0, segment_persons.c["index"] == 0),
        )
    )
    op.execute(
        persons.insert().from_select(
            [c.name for c in persons.c],
            sa.select(
                predictions.c.video_id,
                sa.literal(0),
                predictions.c.model_version,
                _json("[0.0, 0.0, 0.0, 0.0, 0.0]"),
                faces,
                sa.literal(1),
                sa.literal(0.0),
                duration,
                sa.true(),
                predictions.c.model_trained,
                *traits,
            ).join(videos, videos.c.id == predictions.c.video_id),
        )
    )


def downgrade() -> None:
    # The video-level `predictions` and `attention_maps` still hold every headline result.
    op.drop_table("persons")
    op.drop_table("segment_predictions")
    op.drop_table("segment_persons")
    op.drop_index(op.f("ix_segments_status"), table_name="segments")
    op.drop_table("segments")
