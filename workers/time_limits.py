"""How long each stage may run, and the broker visibility timeout that must outlast them all.

Kept apart from the Celery app (no Celery import) so the settings can check an override
when they are read, before any command uses it.
"""

from __future__ import annotations

from collections.abc import Mapping

STAGES = ("ingest", "sample", "faces", "flow", "inference")

# (soft, hard) seconds per stage. Ingest only probes; decoding a segment's window is the
# slowest step; the Redis
# visibility timeout below must stay above the longest hard limit, or a message still being
# worked on would be handed to a second worker.
TIME_LIMITS: dict[str, tuple[float | None, float]] = {
    "ingest": (120, 180),
    "sample": (300, 360),
    "faces": (180, 240),
    "flow": (180, 240),
    "inference": (120, 180),
}
VISIBILITY_TIMEOUT_S = 2 * max(hard for _, hard in TIME_LIMITS.values())


def stage_time_limits(
    overrides: Mapping[str, tuple[float | None, float]],
) -> dict[str, tuple[float | None, float]]:
    """The (soft, hard) seconds each stage runs under: the built-in ones, then `overrides`.

    ValueError, saying which, for an unknown stage, a soft limit not under the hard one, or
    a hard limit at or over the broker's visibility timeout.
    """
    limits = dict(TIME_LIMITS)
    for stage, (soft, hard) in overrides.items():
        if stage not in STAGES:
            raise ValueError(f"time limits for unknown stage {stage!r}; stages: {STAGES}")
        if not 0 < hard < VISIBILITY_TIMEOUT_S:
            raise ValueError(
                f"{stage} hard time limit must be over 0 and under the broker's visibility "
                f"timeout of {VISIBILITY_TIMEOUT_S} s, got {hard:g}"
            )
        if soft is not None and not 0 < soft < hard:
            raise ValueError(
                f"{stage} soft time limit must be over 0 and under the hard one ({hard:g} s), "
                f"got {soft:g}"
            )
        limits[stage] = (soft, hard)
    return limits
