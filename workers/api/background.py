"""The API process's housekeeping thread: queue due completion callbacks, apply retention.

About once a second it queues the callbacks of jobs that became final
(`workers.services.callbacks.dispatch_due`); every `RETENTION_EVERY_S` it erases what is older
than `OCEANSTREAM_RETENTION_DAYS`, if set (`workers.services.reconcile.apply_retention`, as
`oceanstream reconcile` does). An outage is logged and the next round tries again.
"""

from __future__ import annotations

import logging
import threading
import time

from workers.api.context import ApiContext
from workers.celery_app import create_app
from workers.services.callbacks import dispatch_due
from workers.services.reconcile import apply_retention

log = logging.getLogger("oceanstream.api")

DISPATCH_EVERY_S = 1.0
RETENTION_EVERY_S = 3600.0


class Housekeeper:
    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-housekeeping", daemon=True)
        self._celery = None
        self._next_retention = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(DISPATCH_EVERY_S):
            try:
                self.round()
            except Exception as exc:  # an outage: the next round tries again
                log.warning("housekeeping round failed: %s", type(exc).__name__)

    def round(self) -> None:
        settings = self.context.settings
        if self._celery is None:
            self._celery = create_app(settings)  # type: ignore[assignment]
        queued = dispatch_due(self.context.session_factory, self._celery)  # type: ignore[arg-type]
        if queued:
            self.context.metrics.callbacks_queued.inc(queued)
        now = time.monotonic()
        if settings.retention_days is not None and now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            erased = apply_retention(settings, self.context.session_factory)
            if erased is not None:
                log.info("retention: %s", erased)
