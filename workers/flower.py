"""Flower set-up: always list the pipeline's four queues, consumed or not.

Flower shows the lengths of the queues that running workers consume, and falls back to the
configured queues only when no worker is up. A queue with no consumer is exactly the one an
operator needs to see growing (and an autoscaler needs to scale from zero), so the
configured queues are always included.
"""

from __future__ import annotations

from typing import Any


def include_configured_queues() -> None:
    from flower.views import BaseHandler

    original = BaseHandler.get_active_queue_names
    if getattr(original, "_oceanstream", False):
        return

    def queue_names(self: Any) -> list[str]:
        configured = {q.name for q in self.capp.conf.task_queues or [] if q.name}
        return sorted(set(original(self)) | configured)

    queue_names._oceanstream = True  # type: ignore[attr-defined]
    BaseHandler.get_active_queue_names = queue_names
