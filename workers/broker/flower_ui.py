"""Flower's handlers, changed in one place (checked against Flower 2.2).

Flower shows the lengths of the queues that running workers consume, and falls back to the
configured queues only when no worker is up. A queue with no consumer is exactly the one an
operator needs to see growing (and an autoscaler needs to scale from zero), so the
configured queues are always included: `flower.views.BaseHandler.get_active_queue_names`
(not public API) is wrapped. tests/contracts/test_flower_handlers.py fails when a Flower
upgrade removes the method or changes its signature.
"""

from __future__ import annotations

from typing import Any

PATCHED_METHOD = "get_active_queue_names"


def include_configured_queues() -> None:
    """Make every Flower page list the app's configured queues beside the consumed ones."""
    from flower.views import BaseHandler

    original = getattr(BaseHandler, PATCHED_METHOD)
    if getattr(original, "_oceanstream", False):
        return

    def queue_names(self: Any) -> list[str]:
        configured = {q.name for q in self.capp.conf.task_queues or [] if q.name}
        return sorted(set(original(self)) | configured)

    queue_names._oceanstream = True  # type: ignore[attr-defined]
    setattr(BaseHandler, PATCHED_METHOD, queue_names)
