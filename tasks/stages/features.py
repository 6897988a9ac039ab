"""Faces and flow: the two feature stages that run side by side after ingest.

Each writes its tokens to storage and sets its flag; the one that finds the other's flag
already set moves the video to `inference` and alone sends the inference message.

Permanent problems fail the video at once, with their message: a pinned model version whose
bundle fails its check, stored frames of the wrong shape or type (checked from the archive's
headers against the bundle's T and the frame size limit, before the data is read). Outages
raise `RetryableError` for the task to retry.
"""

from __future__ import annotations

import numpy as np

from core.artifacts import frames_specs
from core.errors import InputError, NoFaceError
from core.pipeline import extract_dynamic, extract_static
from core.status import VideoStatus
from db.repository.stages import StageUpdate
from tasks.context import StageContext
from tasks.stages.skeleton import StageSpec, VideoRef, run_stage


def _frames(ctx: StageContext, ref: VideoRef, num_frames: int, *names: str) -> list[np.ndarray]:
    """The stored frames arrays `names`, each checked from its header before it is loaded."""
    specs = frames_specs(num_frames, ctx.config.frame_max_side)
    uri = ctx.store.uri(ctx.layout.frames(ref.id))
    arrays = ctx.store.get_arrays(uri, {name: specs[name] for name in names}, archive=specs)
    return [arrays[name] for name in names]


def _faces(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Faces and face CNN; writes static tokens and the face mask."""
    assert ref.model_version is not None  # the guard checked it
    timings: dict[str, float] = {}
    try:
        bundle = ctx.load_bundle(ref.model_version)
        [frames] = _frames(ctx, ref, bundle.metadata.num_frames, "frames")
        detector = ctx.detector(bundle.metadata.crop_size)
        static = extract_static(frames, detector, bundle, timings)
    except NoFaceError as exc:
        return StageUpdate(VideoStatus.NO_FACE, error=str(exc), timings=timings, faces_found=0)
    except InputError as exc:
        return StageUpdate(VideoStatus.FAILED, error=str(exc), timings=timings)
    ctx.store.put_arrays(ctx.layout.static_features(ref.id), tokens=static.tokens, mask=static.mask)
    return StageUpdate(
        VideoStatus.INFERENCE, timings=timings, faces_found=static.faces_found, ready="faces"
    )


def _flow(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Optical flow and flow CNN; writes dynamic tokens."""
    assert ref.model_version is not None  # the guard checked it
    timings: dict[str, float] = {}
    try:
        bundle = ctx.load_bundle(ref.model_version)
        frames, successors = _frames(ctx, ref, bundle.metadata.num_frames, "frames", "successors")
        dynamic = extract_dynamic(frames, successors, bundle, ctx.config.flow_method, timings)
    except InputError as exc:
        return StageUpdate(VideoStatus.FAILED, error=str(exc), timings=timings)
    ctx.store.put_arrays(ctx.layout.dynamic_features(ref.id), tokens=dynamic)
    return StageUpdate(VideoStatus.INFERENCE, timings=timings, ready="flow")


FACES = StageSpec(
    name="faces",
    runs_from=(VideoStatus.EXTRACTING,),
    leads_to=VideoStatus.INFERENCE,
    work=_faces,
    finishes_from=(VideoStatus.EXTRACTING,),
)
FLOW = StageSpec(
    name="flow",
    runs_from=(VideoStatus.EXTRACTING,),
    leads_to=VideoStatus.INFERENCE,
    work=_flow,
    finishes_from=(VideoStatus.EXTRACTING,),
)


def run_faces(ctx: StageContext, video_id: str) -> bool:
    """Faces and face CNN for one video; True: enqueue inference."""
    return run_stage(ctx, video_id, FACES)


def run_flow(ctx: StageContext, video_id: str) -> bool:
    """Optical flow and flow CNN for one video; True: enqueue inference."""
    return run_stage(ctx, video_id, FLOW)
