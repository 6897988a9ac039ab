"""Where a video is in the pipeline: one enum used by `core`, `db`, `tasks` and the CLI.

`VideoStatus` is a `StrEnum`, so a member compares equal to its stored string and goes into
JSON and SQL as that string.
"""

from __future__ import annotations

from enum import StrEnum


class VideoStatus(StrEnum):
    """Every state a video can be in, in pipeline order."""

    PENDING = "pending"
    # A live source still being watched: its segments arrive over time (`oceanstream watch`).
    LIVE = "live"
    INGESTING = "ingesting"
    EXTRACTING = "extracting"
    INFERENCE = "inference"
    DONE = "done"
    NO_FACE = "no_face"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """A video leaves a final state only when it is explicitly re-run."""
        return self in FINAL_STATUSES

    @property
    def is_processed(self) -> bool:
        """`done` and `no_face` count as processed (exit code 0); `failed` does not."""
        return self in (VideoStatus.DONE, VideoStatus.NO_FACE)


#: States a video leaves only when it is explicitly re-run.
FINAL_STATUSES: tuple[VideoStatus, ...] = (
    VideoStatus.DONE,
    VideoStatus.NO_FACE,
    VideoStatus.FAILED,
)
#: States of a video still on its way through the pipeline.
UNFINISHED_STATUSES: tuple[VideoStatus, ...] = (
    VideoStatus.PENDING,
    VideoStatus.LIVE,
    VideoStatus.INGESTING,
    VideoStatus.EXTRACTING,
    VideoStatus.INFERENCE,
)
