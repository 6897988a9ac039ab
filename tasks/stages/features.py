"""Faces and flow: the two feature stages of a segment.

Faces finds the segment's persons (every face, linked into tracks) and writes each person's
face tokens and mask; the persons themselves (boxes, flow region, identity embedding) are
stored with its finish. Flow writes each person's dynamic tokens: over the person's region
for a bundle trained that way, else one set over the whole frame that every person shares.
Whole-frame flow runs beside faces; person flow needs the regions faces stored, so faces
sends it (`next_after_faces`). The stage that finds the other's flag set moves the segment
to `inference` and alone sends the inference message.

A segment where no face is found is final (`no_face`) at once. Permanent problems fail the
segment with their message: a pinned model version whose bundle fails its check, stored
frames of the wrong shape or type (checked from the archive's headers against the bundle's
T and the frame size limit, before the data is read). Outages raise for the task to retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InputError, NoFaceError
from core.persons.regions import Region
from core.persons.segment_analysis import (
    extract_person_dynamic,
    extract_persons,
    faces_seen,
    stack_static,
)
from core.persons.shots import cut_times
from core.status import VideoStatus
from core.storage.artifacts import frames_specs
from db import repository as repo
from db.models import SegmentPerson
from db.repository.segment_persons import SegmentPersonRecord
from db.repository.segments import SegmentUpdate
from db.repository.stages import StageUpdate
from tasks.context import StageContext
from tasks.stages.ingest import needs_persons
from tasks.stages.segment_rows import SEGMENT_ROWS
from tasks.stages.skeleton import StageSpec, VideoRef, run_stage


@dataclass
class PersonsUpdate(SegmentUpdate):
    """Faces' finish: the persons to store with it, and the samples that begin a new shot
    (stored as video times, `shots`, once the segment's window is read)."""

    records: list[SegmentPersonRecord] = field(default_factory=list)
    cuts: tuple[int, ...] = ()
    samples: int = 0


def _frames(ctx: StageContext, ref: VideoRef, num_frames: int, *names: str) -> list[np.ndarray]:
    """The segment's stored frames arrays `names`, each checked from its header first."""
    assert ref.index is not None
    specs = frames_specs(num_frames, ctx.config.frame_max_side)
    uri = ctx.store.uri(ctx.layout.segment_frames(ref.video_id, ref.index))
    arrays = ctx.store.get_arrays(uri, {name: specs[name] for name in names}, archive=specs)
    return [arrays[name] for name in names]


def _faces(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Persons, their face tokens and masks; the persons go with the finish."""
    assert ref.model_version is not None and ref.index is not None  # the guard checked
    timings: dict[str, float] = {}
    try:
        bundle = ctx.load_bundle(ref.model_version)
        [frames] = _frames(ctx, ref, bundle.metadata.num_frames, "frames")
        detector = ctx.detector(bundle.metadata.crop_size)
        persons = extract_persons(frames, detector, bundle, timings, embed=ctx.embed)
    except NoFaceError as exc:
        return SegmentUpdate(
            VideoStatus.NO_FACE, error=str(exc), timings=timings, faces_found=0, persons=0
        )
    except InputError as exc:
        return SegmentUpdate(VideoStatus.FAILED, error=str(exc), timings=timings)
    ctx.store.put_arrays(
        ctx.layout.segment_static(ref.video_id, ref.index), **stack_static(persons)
    )
    return PersonsUpdate(
        VideoStatus.INFERENCE,
        timings=timings,
        faces_found=faces_seen(persons, len(frames)),
        ready="faces",
        persons=len(persons),
        cuts=persons[0].cuts,
        samples=len(frames),
        records=[
            SegmentPersonRecord.of(index, p.person, p.embedding) for index, p in enumerate(persons)
        ],
    )


def _store_persons(
    ctx: StageContext, session: Session, ref: VideoRef, changes: StageUpdate
) -> None:
    if isinstance(changes, PersonsUpdate):
        repo.save_segment_persons(session=session, segment_id=ref.id, persons=changes.records)
        segment = repo.get_segment(session=session, segment_id=ref.id)
        if segment is not None:
            changes.shots = cut_times(segment.start_s, segment.end_s, changes.samples, changes.cuts)


def person_regions(session: Session, segment_id: str) -> list[Region] | None:
    """The stored flow regions of the segment's persons, in order; None before faces."""
    rows = session.execute(
        select(SegmentPerson.region)
        .where(SegmentPerson.segment_id == segment_id)
        .order_by(SegmentPerson.index)
    ).all()
    if not rows or any(row.region is None for row in rows):
        return None
    return [Region.from_dict(row.region) for row in rows]


def _flow(ctx: StageContext, ref: VideoRef) -> StageUpdate | None:
    """Optical flow and flow CNN per person (or over the whole frame); None: faces first."""
    assert ref.model_version is not None and ref.index is not None  # the guard checked
    timings: dict[str, float] = {}
    try:
        bundle = ctx.load_bundle(ref.model_version)
        regions = None
        if bundle.metadata.region_mode == "person":
            with ctx.session_factory() as session:
                regions = person_regions(session, ref.id)
            if regions is None:
                return None  # faces has not stored the persons yet; it sends flow when it has
        frames, successors = _frames(ctx, ref, bundle.metadata.num_frames, "frames", "successors")
        dynamic = extract_person_dynamic(
            frames, successors, regions, bundle, ctx.config.flow_method, timings
        )
    except InputError as exc:
        return SegmentUpdate(VideoStatus.FAILED, error=str(exc), timings=timings)
    ctx.store.put_arrays(ctx.layout.segment_dynamic(ref.video_id, ref.index), tokens=dynamic)
    return SegmentUpdate(VideoStatus.INFERENCE, timings=timings, ready="flow")


FACES = StageSpec(
    name="faces",
    runs_from=(VideoStatus.EXTRACTING,),
    leads_to=VideoStatus.INFERENCE,
    work=_faces,
    finishes_from=(VideoStatus.EXTRACTING,),
    rows=SEGMENT_ROWS,
    store=_store_persons,
)
FLOW = StageSpec(
    name="flow",
    runs_from=(VideoStatus.EXTRACTING,),
    leads_to=VideoStatus.INFERENCE,
    work=_flow,
    finishes_from=(VideoStatus.EXTRACTING,),
    rows=SEGMENT_ROWS,
)


def run_faces(ctx: StageContext, segment_id: str) -> list[str]:
    """Persons and face CNN for one segment; the stages to send it to next."""
    if run_stage(ctx, segment_id, FACES):
        drop_frames(ctx, segment_id)
        return ["inference"]
    return next_after_faces(ctx, segment_id)


def drop_frames(ctx: StageContext, segment_id: str) -> None:
    """Delete the segment's sampled frames once both its features are stored.

    Only the feature stages read them, and both are done once the segment is in `inference`
    (a redelivered feature message finds it past `extracting` and does nothing).
    `OCEANSTREAM_KEEP_FRAMES=1` keeps them for debugging.
    """
    if ctx.config.keep_frames:
        return
    with ctx.session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        if segment is None or segment.status != VideoStatus.INFERENCE:
            return
        video_id, index = segment.video_id, segment.index
    ctx.store.delete_prefix(ctx.layout.segment_frames(video_id, index))


def next_after_faces(ctx: StageContext, segment_id: str) -> list[str]:
    """["flow"] when faces stored the persons a person-region flow waits for, else []."""
    with ctx.session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        waiting = (
            segment is not None
            and segment.status == VideoStatus.EXTRACTING
            and segment.faces_ready
            and not segment.flow_ready
        )
    return ["flow"] if waiting and needs_persons(ctx, segment_id) else []


def run_flow(ctx: StageContext, segment_id: str) -> list[str]:
    """Optical flow and flow CNN for one segment; ["inference"] when it completed the pair."""
    if not run_stage(ctx, segment_id, FLOW):
        return []
    drop_frames(ctx, segment_id)
    return ["inference"]
