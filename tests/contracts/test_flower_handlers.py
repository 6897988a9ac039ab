"""What workers/broker/flower_ui.py assumes of Flower's handlers, checked against Flower.

`BaseHandler.get_active_queue_names` is not public API: it must still exist with the same
signature, still be what the queue pages ask, and the patch must add the configured queues.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from celery import Celery
from kombu import Queue

from workers.broker.flower_ui import PATCHED_METHOD, include_configured_queues


def test_the_patched_method_exists_with_the_expected_signature() -> None:
    from flower.views import BaseHandler

    method = getattr(BaseHandler, PATCHED_METHOD, None)
    assert method is not None, f"Flower's BaseHandler no longer has {PATCHED_METHOD}"
    assert list(inspect.signature(method).parameters) == ["self"]


def test_the_queue_pages_still_ask_the_patched_method() -> None:
    from flower.api import tasks
    from flower.views import broker

    for module in (broker, tasks):
        assert f"self.{PATCHED_METHOD}()" in inspect.getsource(module), module.__name__


def test_the_patch_adds_configured_queues_to_the_consumed_ones() -> None:
    from flower.views import BaseHandler

    include_configured_queues()
    include_configured_queues()  # idempotent
    app = Celery(set_as_current=False)
    app.conf.task_queues = [Queue("ingest"), Queue("inference")]
    handler = SimpleNamespace(
        capp=app,
        application=SimpleNamespace(
            workers={"w@h": {"active_queues": [{"name": "faces"}, {"name": "ingest"}]}}
        ),
    )
    names = getattr(BaseHandler, PATCHED_METHOD)(handler)
    assert names == ["faces", "inference", "ingest"]
