"""Helpers for the inference pool's integration tests and benchmark.

One-segment videos are made directly, their segments in state `inference` with feature sets
in storage (no decoding); messages, one segment id each, are sent the way the feature stages
send them, from several producer processes, and pool workers are real `oceanstream worker
--queues inference` processes.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from tests.support.cluster import Cluster
from tests.support.services import ROOT, wait_for


def register_version(database_url: str, metadata: Any) -> None:
    """Record a bundle's version (built-in: no location) so videos can be pinned to it."""
    from db import repository as repo
    from db.engine import make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine).begin() as session:
            repo.ensure_model_version(
                session=session,
                version=metadata.version,
                trained=metadata.trained,
                metadata=metadata.to_dict(),
            )
    finally:
        engine.dispose()


def make_feature_segments(
    database_url: str,
    storage_url: str,
    version: str,
    count: int,
    *,
    prefix: str,
    num_frames: int = 16,
    static_dim: int = 512,
    dynamic_dim: int = 256,
    seed: int = 0,
    persons: int = 1,
) -> list[str]:
    """`count` one-segment videos pinned to `version`, each segment in state `inference` with
    `persons` persons and random feature sets; returns the segment ids.

    Videos are named `<prefix>-<index>` and are `extracting` (their segment is not final).
    Some frames have no face (mask False), as in real videos. The flow tokens are one
    whole-frame set shared by the persons, as the built-in bundle computes them.
    """
    from core.storage.artifacts import LAYOUT
    from core.storage.store import ArtifactStore
    from db.models import Segment, SegmentPerson, Video

    rng = np.random.default_rng(seed)
    store = ArtifactStore(storage_url)
    now = sa.func.now()
    videos, segments, people = [], [], []
    for index in range(count):
        video_id, segment_id = uuid.uuid4().hex, uuid.uuid4().hex
        masks = rng.random((persons, num_frames)) > 0.2
        masks[:, 0] = True
        store.put_arrays(
            LAYOUT.segment_static(video_id, 0),
            tokens=rng.standard_normal((persons, num_frames, static_dim)).astype(np.float32),
            mask=masks,
        )
        store.put_arrays(
            LAYOUT.segment_dynamic(video_id, 0),
            tokens=rng.standard_normal((1, num_frames, dynamic_dim)).astype(np.float32),
        )
        videos.append(
            {
                "id": video_id,
                "content_hash": uuid.uuid4().hex + uuid.uuid4().hex,
                "name": f"{prefix}-{index:05d}",
                "source_path": f"/synthetic/{prefix}-{index:05d}.mp4",
                "size_bytes": 0,
                "status": "extracting",
                "model_version": version,
                "timings": {},
                "deliveries": {},
                "attempts": 0,
                "duration_s": 15.0,
            }
        )
        segments.append(
            {
                "id": segment_id,
                "video_id": video_id,
                "index": 0,
                "start_s": 0.0,
                "end_s": 15.0,
                "status": "inference",
                "timings": {},
                "deliveries": {},
                "faces_ready": True,
                "flow_ready": True,
                "frames": num_frames,
                "faces_found": int(masks.any(axis=0).sum()),
                "persons": persons,
            }
        )
        people.extend(
            {
                "segment_id": segment_id,
                "index": person,
                "face_frames": int(masks[person].sum()),
                "first_box": [10.0 + 60 * person, 10.0, 50.0, 50.0],
                "last_box": [10.0 + 60 * person, 10.0, 50.0, 50.0],
            }
            for person in range(persons)
        )
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            for table, rows in ((Video, videos), (Segment, segments)):
                insert = sa.insert(table.__table__).values(created_at=now, updated_at=now)
                connection.execute(insert, rows)
            connection.execute(sa.insert(SegmentPerson.__table__), people)
    finally:
        engine.dispose()
    return [row["id"] for row in segments]


def start_pool_worker(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None, ready_lines: int = 1
) -> subprocess.Popen[bytes]:
    """`oceanstream worker --queues inference ARGS`, returned once warmed."""
    log = cluster.home / f"pool-{uuid.uuid4().hex[:6]}.log"
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--queues", "inference", *args],
        env={**cluster.env, **(env or {})},
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log_path = log  # type: ignore[attr-defined]
    cluster.workers.append(process)

    def warmed() -> bool:
        return log.read_bytes().count(b"process ready with model") >= ready_lines

    wait_for(lambda: warmed() or process.poll() is not None, 240, "the inference pool to start")
    if process.poll() is not None:
        raise RuntimeError(f"inference pool exited:\n{log.read_text()[-3000:]}")
    return process


def send_from_producers(
    broker_url: str, segment_ids: Sequence[str], producers: int, rate: float | None = None
) -> tuple[float, float]:
    """Send one inference message per segment id from `producers` processes, all starting
    together.

    `rate` (messages per second, all producers together) paces the sending; None sends as
    fast as each producer can. Returns (epoch second sending began, seconds it took).
    """
    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in range(producers)]
    # The common start, far ahead until every producer is connected.
    shared = context.Value("d", time.time() + 3600.0)
    share = rate / producers if rate else None
    processes = [
        context.Process(
            target=_produce_when_told,
            args=(broker_url, list(segment_ids[i::producers]), share, shared, ready[i]),
        )
        for i in range(producers)
    ]
    for process in processes:
        process.start()
    for event in ready:
        if not event.wait(120):
            raise TimeoutError("a producer did not connect to the broker")
    begin = time.time() + 0.2
    shared.value = begin
    for process in processes:
        process.join(600)
        if process.exitcode != 0:
            raise RuntimeError(f"a producer exited with status {process.exitcode}")
    return begin, time.time() - begin


def _produce_when_told(
    broker_url: str, segment_ids: list[str], rate: float | None, shared: Any, ready: Any
) -> None:
    from workers.celery_app import create_app
    from workers.pool.messages import SENT_AT_HEADER
    from workers.settings import Settings

    app = create_app(Settings(broker_url=broker_url))
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection()
        ready.set()
        # Every producer waits for the common start, set once all are connected.
        while time.time() < shared.value:
            time.sleep(0.0005)
        begin = float(shared.value)
        for index, segment_id in enumerate(segment_ids):
            if rate:
                delay = begin + index / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            app.send_task(
                "oceanstream.inference",
                args=[segment_id],
                queue="inference",
                headers={SENT_AT_HEADER: time.time()},
                producer=producer,
            )


def wait_finished(database_url: str, prefix: str, count: int, timeout: float) -> None:
    """Wait until `count` segments of the videos named `<prefix>-*` are done or failed."""
    engine = sa.create_engine(database_url)
    try:

        def finished() -> bool:
            with engine.connect() as connection:
                done = connection.execute(
                    sa.text(
                        "SELECT count(*) FROM segments s JOIN videos v ON v.id = s.video_id "
                        "WHERE v.name LIKE :p AND s.status IN ('done', 'failed')"
                    ),
                    {"p": f"{prefix}-%"},
                ).scalar_one()
            return int(done) >= count

        wait_for(finished, timeout, f"{count} segments of videos {prefix}-* to finish", every=0.05)
    finally:
        engine.dispose()


def scrape(url: str) -> dict[str, float]:
    """A Prometheus endpoint's samples as {'name{label="value"}': value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def log_text(process: subprocess.Popen[bytes]) -> str:
    path: Path = process.log_path  # type: ignore[attr-defined]
    return path.read_text(errors="replace")


#: The old name, from before segments: it makes one-segment videos and returns segment ids,
#: which is what inference messages carry now.
make_feature_videos = make_feature_segments
