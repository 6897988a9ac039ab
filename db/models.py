"""The database tables, as SQLAlchemy 2.0 typed models.

The schema is portable between SQLite (one process on a laptop) and PostgreSQL (a fleet of
workers): plain `String` plus CHECK constraints instead of native enums, generic `JSON`, and
UTC timestamps through `UTCDateTime`. Constraint names come from a naming convention so that
migrations can refer to them on both backends.

The schema itself is created by the Alembic migrations in `db/migrations`, never by
`Base.metadata.create_all`; a test keeps the two identical.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.status import FINAL_STATUSES, VideoStatus
from core.traits import TRAITS
from db.types import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Every state a video can be in (`core.status.VideoStatus`, in pipeline order), as stored.
VIDEO_STATUSES: tuple[str, ...] = tuple(status.value for status in VideoStatus)
#: States a video leaves only when it is explicitly re-run.
TERMINAL_STATUSES: tuple[str, ...] = tuple(status.value for status in FINAL_STATUSES)
JOB_KINDS: tuple[str, ...] = ("analyze", "submit", "extract")
#: The pipeline stages that must both finish before inference (see `finish_stage`).
FEATURE_STAGES: tuple[str, ...] = ("faces", "flow")


def new_id() -> str:
    """A random 32-character hex id: unique across processes without a database round trip."""
    return uuid.uuid4().hex


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention and the shared type map."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[int]: JSON(),
    }


class ModelVersion(Base):
    """A model bundle that produced predictions; `version` is derived from its content."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # At most one active version. A partial unique index is supported by both backends.
        Index(
            "uq_model_versions_active",
            "active",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    trained: Mapped[bool] = mapped_column(Boolean)
    # `metadata` is reserved by the declarative base, so the attribute is `meta`.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    uri: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: The tenant that owns what the CLI makes, and every row older than tenants.
DEFAULT_TENANT_ID = "default"
#: Where a job's completion callback is (`workers.services.callbacks`).
CALLBACK_STATES: tuple[str, ...] = ("waiting", "queued", "delivered", "gave_up")


class Tenant(Base):
    """A customer of the HTTP API: every job and video belongs to one.

    `webhook_secret` signs its completion callbacks (HMAC-SHA256); it must be readable to
    sign, so it is stored as is, unlike API keys.
    """

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key of a tenant, stored only as its SHA-256 hash; `prefix` names it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One `analyze`, `submit` or `extract` request over a list of videos."""

    __tablename__ = "jobs"
    __table_args__ = (
        # A repeated request with the same Idempotency-Key finds the job it made.
        Index("uq_jobs_tenant_id_idempotency_key", "tenant_id", "idempotency_key", unique=True),
        Index("ix_jobs_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The owning tenant's id; no foreign key, so the default tenant needs no row.
    tenant_id: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_TENANT_ID, server_default=text(f"'{DEFAULT_TENANT_ID}'")
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    callback_url: Mapped[str | None] = mapped_column(Text)
    # None without a callback_url; else one of CALLBACK_STATES.
    callback_state: Mapped[str | None] = mapped_column(String(16), index=True)

    entries: Mapped[list[JobVideo]] = relationship(
        back_populates="job", order_by="JobVideo.position", passive_deletes=True
    )


class Video(Base):
    """One distinct video file (by content hash) and where it is in the pipeline."""

    __tablename__ = "videos"
    __table_args__ = (
        CheckConstraint(f"status IN ({_quoted(VIDEO_STATUSES)})", name="status"),
        # One row per content within a tenant: erasing one tenant's video never touches
        # another's.
        UniqueConstraint("tenant_id", "content_hash"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # The owning tenant's id; no foreign key, so the default tenant needs no row.
    tenant_id: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_TENANT_ID, server_default=text(f"'{DEFAULT_TENANT_ID}'")
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text)
    source_path: Mapped[str] = mapped_column(Text)
    storage_uri: Mapped[str | None] = mapped_column(Text)
    # The stored object's size and version when it was stored (`core.storage.store.StoredStamp`):
    # compared before each read, so a copy replaced later is never read as this content.
    storage_stamp: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Videos may be over 2 GiB, past a 32-bit integer.
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=VideoStatus.PENDING.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    fps: Mapped[float | None] = mapped_column(Double)
    frame_count: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Double)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int | None] = mapped_column(Integer)
    faces_found: Mapped[int | None] = mapped_column(Integer)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The model version every stage of this video uses, pinned at ingest: features from one
    # bundle's encoders are meaningless to another bundle's fusion model.
    model_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.version"))
    # Stage name -> times a message for it was taken up; bounds poison messages.
    deliveries: Mapped[dict[str, Any]] = mapped_column(default=dict)
    faces_ready: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    flow_ready: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    predictions: Mapped[list[Prediction]] = relationship(
        back_populates="video", passive_deletes=True
    )
    segments: Mapped[list[Segment]] = relationship(
        back_populates="video", order_by="Segment.index", passive_deletes=True
    )
    persons: Mapped[list[Person]] = relationship(back_populates="video", passive_deletes=True)


class JobVideo(Base):
    """One path as submitted in a job: the name it was given there and its position.

    Keyed by position, so two paths with the same bytes are two entries sharing one video.
    """

    __tablename__ = "job_videos"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="entries")
    video: Mapped[Video] = relationship()


class Prediction(Base):
    """OCEAN scores for one video from one model version; at most one row per pair."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("video_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    openness: Mapped[float] = mapped_column(Double)
    conscientiousness: Mapped[float] = mapped_column(Double)
    extraversion: Mapped[float] = mapped_column(Double)
    agreeableness: Mapped[float] = mapped_column(Double)
    neuroticism: Mapped[float] = mapped_column(Double)
    model_trained: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    video: Mapped[Video] = relationship(back_populates="predictions")
    attention_map: Mapped[AttentionMap | None] = relationship(
        back_populates="prediction", passive_deletes=True
    )

    @property
    def scores(self) -> tuple[float, ...]:
        """The five scores in `core.traits.TRAITS` order."""
        return tuple(float(getattr(self, name)) for name in TRAITS)

    @property
    def traits(self) -> dict[str, float]:
        """Trait name -> score, in `core.traits.TRAITS` order."""
        return {name: float(getattr(self, name)) for name in TRAITS}


class AttentionMap(Base):
    """The cross-attention map of one prediction, compressed (see `db.attention`)."""

    __tablename__ = "attention_maps"

    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    shape: Mapped[list[int]] = mapped_column()
    dtype: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)

    prediction: Mapped[Prediction] = relationship(back_populates="attention_map")


class TraitScores:
    """The five OCEAN score columns, in `core.traits.TRAITS` order, and their views."""

    openness: Mapped[float] = mapped_column(Double)
    conscientiousness: Mapped[float] = mapped_column(Double)
    extraversion: Mapped[float] = mapped_column(Double)
    agreeableness: Mapped[float] = mapped_column(Double)
    neuroticism: Mapped[float] = mapped_column(Double)

    @property
    def scores(self) -> tuple[float, ...]:
        """The five scores in `core.traits.TRAITS` order."""
        return tuple(float(getattr(self, name)) for name in TRAITS)

    @property
    def traits(self) -> dict[str, float]:
        """Trait name -> score, in `core.traits.TRAITS` order."""
        return {name: float(getattr(self, name)) for name in TRAITS}


class Segment(Base):
    """One analysis window of a video (`core.video.segments.Segment`), where it is in the pipeline.

    Keyed by a random id like videos, since stage messages carry segment ids. Its status takes
    the video statuses; the video becomes final when all its segments are (`aggregate_video`).
    """

    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("video_id", "index"),
        CheckConstraint(f"status IN ({_quoted(VIDEO_STATUSES)})", name="status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # No index of its own: the unique (video_id, index) constraint leads with it.
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Double)
    end_s: Mapped[float] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16), default=VideoStatus.PENDING.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    frames: Mapped[int | None] = mapped_column(Integer)
    faces_found: Mapped[int | None] = mapped_column(Integer)
    # How many persons the segment holds (`core.persons.tracks`), once its faces stage is done.
    persons: Mapped[int | None] = mapped_column(Integer)
    # Video times (s) at which a new shot is first seen in the segment (`core.persons.shots`), once
    # its faces stage is done; empty for one shot.
    shots: Mapped[list[float] | None] = mapped_column(JSON)
    faces_ready: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    flow_ready: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    deliveries: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    video: Mapped[Video] = relationship(back_populates="segments")
    segment_persons: Mapped[list[SegmentPerson]] = relationship(
        back_populates="segment", order_by="SegmentPerson.index", passive_deletes=True
    )


class SegmentPerson(Base):
    """One person found in one segment (`core.persons.tracks.Person`).

    `index` is its place in the segment, most face frames first, as `core.persons.tracks` orders
    them; `person` is the video-level person it was linked to, set when the video is
    aggregated. Boxes are x, y, w, h in frame pixels, as in
    `core.persons.person_links.PersonSummary`.
    """

    __tablename__ = "segment_persons"
    __table_args__ = (UniqueConstraint("segment_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment_id: Mapped[str] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    person: Mapped[int | None] = mapped_column(Integer)
    face_frames: Mapped[int] = mapped_column(Integer)
    first_box: Mapped[list[float] | None] = mapped_column(JSON)
    last_box: Mapped[list[float] | None] = mapped_column(JSON)
    region: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The identity embedding (float32, L2-normalised; `core.persons.identity`), when a face
    # backbone was installed: what links the person across cuts.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Seen in the segment's first shot, and in its last (`core.persons.tracks.Person`): continuity
    # links it across a boundary only where no cut lies in between.
    opens_segment: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    closes_segment: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    segment: Mapped[Segment] = relationship(back_populates="segment_persons")
    predictions: Mapped[list[SegmentPrediction]] = relationship(
        back_populates="segment_person", passive_deletes=True
    )


class SegmentPrediction(TraitScores, Base):
    """OCEAN scores and attention of one person in one segment from one model version.

    The attention map is stored inline, compressed as `db.attention` does for
    `attention_maps`; the three attention columns are all set or all empty.
    """

    __tablename__ = "segment_predictions"
    __table_args__ = (UniqueConstraint("segment_person_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    segment_person_id: Mapped[int] = mapped_column(
        ForeignKey("segment_persons.id", ondelete="CASCADE")
    )
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    model_trained: Mapped[bool] = mapped_column(Boolean)
    attention_shape: Mapped[list[int] | None] = mapped_column(JSON)
    attention_dtype: Mapped[str | None] = mapped_column(String(16))
    attention_data: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    segment_person: Mapped[SegmentPerson] = relationship(back_populates="predictions")


class Person(TraitScores, Base):
    """One video-level person's aggregate over its scored segments, from one model version.

    The trait columns hold the means weighted by face frames; `spread` the five standard
    deviations across segments, in trait order. `main` marks the person whose aggregate is
    the video's headline result (its `predictions` row).
    """

    __tablename__ = "persons"
    __table_args__ = (UniqueConstraint("video_id", "person", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    person: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    spread: Mapped[list[float]] = mapped_column(JSON)
    face_frames: Mapped[int] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(Integer)
    first_s: Mapped[float] = mapped_column(Double)
    last_s: Mapped[float] = mapped_column(Double)
    main: Mapped[bool] = mapped_column(Boolean)
    model_trained: Mapped[bool] = mapped_column(Boolean)

    video: Mapped[Video] = relationship(back_populates="persons")

    @property
    def spreads(self) -> dict[str, float]:
        """Trait name -> standard deviation across segments."""
        return {name: float(value) for name, value in zip(TRAITS, self.spread, strict=True)}


class CallbackAttempt(Base):
    """One try at delivering a job's completion callback: what the receiver answered."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
