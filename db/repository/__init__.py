"""Repository functions: the only way the rest of the project reads and writes the database.

Every function takes the session keyword-only and never commits: the caller owns the
transaction (`with session_factory.begin() as session: ...`), so several calls, say a
prediction and the video's move to `done`, commit or roll back together.
"""

from db.repository._common import NotFoundError
from db.repository.aggregates import AggregateOutcome, PersonAggregate, aggregate_video
from db.repository.jobs import attach_video, create_job, get_job
from db.repository.model_versions import (
    activate_model_version,
    ensure_model_version,
    get_active_model_version,
    get_model_version,
)
from db.repository.predictions import get_prediction, load_attention, save_prediction
from db.repository.results import (
    ResultRow,
    job_failures,
    job_status_counts,
    query_results,
    video_ids_with_prefix,
)
from db.repository.segment_persons import (
    SegmentPersonRecord,
    TimelineRow,
    load_segment_attention,
    save_segment_persons,
    save_segment_prediction,
    video_persons,
    video_timeline,
)
from db.repository.segments import (
    SegmentUpdate,
    count_segment_delivery,
    create_segments,
    find_stuck_segments,
    finish_segment,
    get_segment,
    get_segments,
    release_segment_delivery,
    touch_segment,
)
from db.repository.stages import (
    PROBE_FIELDS,
    StageUpdate,
    count_delivery,
    finish_stage,
    pin_model_version,
    release_delivery,
    set_storage_uri,
    touch_video,
)
from db.repository.videos import (
    find_stuck_videos,
    get_or_create_video,
    get_video,
    transition_video,
)

__all__ = [
    "PROBE_FIELDS",
    "AggregateOutcome",
    "NotFoundError",
    "PersonAggregate",
    "ResultRow",
    "SegmentPersonRecord",
    "SegmentUpdate",
    "StageUpdate",
    "TimelineRow",
    "activate_model_version",
    "aggregate_video",
    "attach_video",
    "count_delivery",
    "count_segment_delivery",
    "create_job",
    "create_segments",
    "ensure_model_version",
    "find_stuck_segments",
    "find_stuck_videos",
    "finish_segment",
    "finish_stage",
    "get_active_model_version",
    "get_job",
    "get_model_version",
    "get_or_create_video",
    "get_prediction",
    "get_segment",
    "get_segments",
    "get_video",
    "job_failures",
    "job_status_counts",
    "load_attention",
    "load_segment_attention",
    "pin_model_version",
    "query_results",
    "release_delivery",
    "release_segment_delivery",
    "save_prediction",
    "save_segment_persons",
    "save_segment_prediction",
    "set_storage_uri",
    "touch_segment",
    "touch_video",
    "transition_video",
    "video_ids_with_prefix",
    "video_persons",
    "video_timeline",
]
