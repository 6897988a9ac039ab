"""The JSON result contract: one object per video, keys in a fixed order."""

from __future__ import annotations

from typing import Any


def result_json(
    *,
    video: str,
    video_id: str | None,
    status: str,
    traits: dict[str, float] | None,
    faces_found: int | None,
    frames: int | None,
    model_version: str | None,
    model_trained: bool | None,
    error: str | None,
) -> dict[str, Any]:
    """One video in the JSON result contract (the keys and their order are fixed)."""
    return {
        "video": video,
        "video_id": video_id,
        "status": status,
        "traits": traits,
        "faces_found": faces_found,
        "frames": frames,
        "model_version": model_version,
        "model_trained": model_trained,
        "error": error,
    }
