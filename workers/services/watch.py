"""`watch`: a live source analysed segment by segment as it arrives.

The source is one video record (`live` while it is watched). Each window the source
completes (`core.live.SegmentCutter`) is handed off at once: its sampled frames are stored
where the sampling stage would store them, a segment row is appended and moved to
`extracting` in one transaction, and then faces and flow are sent to the queues (the
default) or run in this process by one analysis thread (`in_process`). The frames are then
dropped, so the watcher holds at most one window's samples.

When the source drops, it is opened again with backoff for up to `reconnect_s`; the frames
it sends then resume on the timeline after the time it was away, at the next window start,
and the hole is recorded (`gap_before_s` on the next segment; `gaps` and `gap_s` on the
video's timings). When it ends (or the watch is stopped) the video moves from `live` to
`extracting` and is aggregated: at once if every segment is final, else by its last segment
to finish, as for a file. A watch started again under the same name continues the video
after its last stored segment.

A thread polls the database for segments that became final: each is reported (`on_segment`,
the `--json` lines) and its latency, from the end of its window in the stream to its stored
result, observed in a Prometheus histogram. A watch whose results fall behind the stream
says so in its log.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.live import (
    LiveSegment,
    LiveSource,
    SegmentCutter,
    SourceError,
    SourceOptions,
    backoff_delays,
    open_source,
)
from core.status import FINAL_STATUSES, VideoStatus
from tasks.context import is_outage

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session

    from tasks.context import StageContext

log = logging.getLogger("oceanstream.watch")

_LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)
#: A watch is behind when a cut segment waits longer than this many windows for its result.
BEHIND_WINDOWS = 2.0
POLL_S = 0.25
#: Tries again of a stage run in the watcher that met an outage (pauses 1, 2, 4, 8, 16 s).
ANALYSIS_RETRIES = 5
NO_SEGMENT = "the live source gave no window of at least half a segment to analyse"


class NeverOpened(Exception):
    """The source could not be opened within the reconnect window."""


class WatchMetrics:
    """The watcher's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram(
            "oceanstream_watch_segment_latency_seconds",
            "From the end of a segment's window in the stream to its stored result.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.segments = Counter(
            "oceanstream_watch_segments_total",
            "Segments of watched sources by outcome (cut, done, no_face, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.behind = Gauge(
            "oceanstream_watch_behind_seconds",
            "How long the oldest segment without a result has waited past its window's end.",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "oceanstream_watch_backlog_segments",
            "Segments cut and not yet final.",
            registry=self.registry,
        )
        self.gaps = Counter(
            "oceanstream_watch_gaps_total",
            "Times a watched source dropped and came back.",
            registry=self.registry,
        )


@dataclass
class WatchReport:
    """What one watch did."""

    video_id: str
    name: str
    status: str = VideoStatus.LIVE.value
    segments: int = 0  # cut by this watch
    gaps: int = 0
    latencies: list[float] = field(default_factory=list)
    stopped: bool = False


def live_content_key(name: str, tenant_id: str) -> str:
    """The stand-in content hash of the live video called `name`: a watch started again with
    the same name finds the same video."""
    return hashlib.sha256(f"live\0{tenant_id}\0{name}".encode()).hexdigest()


def default_name(source: str) -> str:
    """The source without any credentials in it (a URL's user and password)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(source)
    except ValueError:
        return source
    if parts.username is None and parts.password is None:
        return source
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


class Watcher:
    """Watches one source into one video; `run` returns when it has ended and is stored."""

    def __init__(
        self,
        ctx: StageContext,
        *,
        segment_seconds: float,
        reconnect_s: float,
        celery: Celery | None = None,
        metrics: WatchMetrics | None = None,
        source_options: SourceOptions | None = None,
        on_segment: Callable[[dict[str, Any]], None] | None = None,
        wait_for_results: bool = True,
    ) -> None:
        self.ctx = ctx
        self.segment_seconds = segment_seconds
        self.reconnect_s = reconnect_s
        self.celery = celery
        self.metrics = metrics or WatchMetrics()
        self.source_options = source_options or SourceOptions()
        self.on_segment = on_segment
        self.wait_for_results = wait_for_results
        self.stop = threading.Event()
        self._closed_at: dict[str, float] = {}  # segment id -> when its window ended
        self._reported: set[str] = set()
        self._analysis: queue.Queue[str | None] = queue.Queue()
        self._behind_said = False
        self._reading_said = False
        self._done = threading.Event()  # the watch is over: the poller reports and ends
        self._active: str | None = None  # the version new videos are pinned to (`prepare`)
        self._person_flow = False  # the model's flow covers each person (faces first)
        self._last_end: float | None = None  # where the video's last segment ends
        self._gap_pending = False  # the source was away: the next segment records the gap

    # --- the watch ---------------------------------------------------------------------

    def prepare(self, *, warm: bool) -> str:
        """Find (and register) the model version new videos are pinned to, before the source
        is opened; with `warm`, also load that model and run it once, so that the first
        segment analysed in this process does not wait for it. Returns the version."""
        with self.ctx.session_factory.begin() as session:
            self._active = self.ctx.active_version(session)
        if warm:
            from workers.signals import warm_models

            self._active = self.ctx.active_version()
            warm_models(self.ctx, self.ctx.load_bundle(self._active))
        return self._active

    def run(self, source: str, name: str | None = None, job_kind: str = "submit") -> WatchReport:
        """Open `source` (`NeverOpened` if it cannot be), watch it to its end or `stop`."""
        connection = self._open(source, since=time.monotonic())
        if connection is None:
            raise NeverOpened(self._last_error)
        name = name or default_name(source)
        video_id, version, base = self._register(source, name, connection, job_kind)
        report = WatchReport(video_id, name)
        poller = threading.Thread(target=self._poll, args=(report,), daemon=True)
        analyser = threading.Thread(target=self._analyse, daemon=True)
        poller.start()
        if self.celery is None:
            analyser.start()
        try:
            self._watch(connection, report, version, base)
        finally:
            self._analysis.put(None)
        self._end(report)
        if self.celery is None:
            analyser.join()
        if self.wait_for_results:
            self._wait_final(report)
        self._done.set()
        poller.join(5)
        self._report_finals(report)
        with self.ctx.session_factory() as session:
            from db import repository as repo

            video = repo.get_video(session=session, video_id=video_id)
            report.status = str(video.status) if video is not None else report.status
        return report

    _last_error = "not tried"

    def _open(self, source: str, since: float) -> LiveSource | None:
        """The source opened, trying again with backoff until `reconnect_s` has passed."""
        delays = backoff_delays()
        while True:
            try:
                return open_source(source, self.source_options)
            except SourceError as exc:
                self._last_error = str(exc)
            waited = time.monotonic() - since
            if self.stop.is_set() or waited >= self.reconnect_s:
                return None
            pause = min(next(delays), self.reconnect_s - waited)
            log.info("cannot open %s (%s); again in %.1f s", source, self._last_error, pause)
            if self.stop.wait(pause):
                return None

    def _watch(
        self,
        connection: LiveSource,
        report: WatchReport,
        version: str,
        base: float,
    ) -> None:
        num_frames, self._person_flow = self._model_facts(version)
        max_side = self.ctx.config.frame_max_side
        cutter = SegmentCutter(self.segment_seconds, connection.fps, num_frames, max_side)
        end = base
        while True:
            started = time.monotonic()
            try:
                for offset, frame in connection.frames(self.stop.is_set):
                    end = base + offset + 1.0 / connection.fps
                    for segment in cutter.add(base + offset, _rgb(frame)):
                        self._hand_off(report, segment)
                    self._check_reading(time.monotonic() - started - offset)
                dropped = None
            except SourceError as exc:
                dropped = str(exc)
            finally:
                connection.close()
            last = cutter.flush()
            if last is not None:
                self._hand_off(report, last)
            if self.stop.is_set():
                report.stopped = True
                return
            if dropped is None and connection.finite:
                return
            log.warning(
                "%s %s; opening it again for up to %g s",
                connection.url,
                f"dropped ({dropped})" if dropped else "stopped sending",
                self.reconnect_s,
            )
            away = time.monotonic()
            reopened = self._open(connection.url, since=away)
            if reopened is None:
                return
            if reopened.finite:
                # A live source that comes back as a finished recording (an HLS playlist
                # that got its end tag) holds what was watched already: the watch is over.
                reopened.close()
                return
            connection = reopened
            if connection.fps != cutter.fps:
                cutter = SegmentCutter(self.segment_seconds, connection.fps, num_frames, max_side)
            base = cutter.next_window_start(end + (time.monotonic() - away))
            self._gap_pending = True  # recorded with the next segment
            report.gaps += 1
            self.metrics.gaps.inc()
            log.warning("%s is back; resuming at %.1f s", connection.url, base)

    def _check_reading(self, lag: float) -> None:
        if lag > self.segment_seconds and not self._reading_said:
            self._reading_said = True
            log.warning("reading the source is %.1f s behind real time", lag)

    # --- the database -------------------------------------------------------------------

    def _register(
        self, source: str, name: str, connection: LiveSource, job_kind: str
    ) -> tuple[str, str, float]:
        """The live video (made, or found by name), its model version, where its timeline
        resumes and the gap before that."""
        from db import repository as repo
        from db.models import DEFAULT_TENANT_ID
        from db.repository.stages import StageUpdate

        width = connection.stream.codec_context.width
        height = connection.stream.codec_context.height
        with self.ctx.session_factory.begin() as session:
            job = repo.create_job(session=session, kind=job_kind, options={"watch": name})
            video, _ = repo.get_or_create_video(
                session=session,
                content_hash=live_content_key(name, DEFAULT_TENANT_ID),
                name=name,
                source_path=default_name(source),
                size_bytes=0,
            )
            repo.attach_video(
                session=session, job_id=job.id, video_id=video.id, name=name, position=0
            )
            version = repo.pin_model_version(
                session=session,
                video_id=video.id,
                version=video.model_version or self._active or self.ctx.active_version(session),
            )
            repo.transition_video(session=session, video_id=video.id, to_status=VideoStatus.LIVE)
            repo.finish_stage(
                session=session,
                video_id=video.id,
                changes=StageUpdate(
                    VideoStatus.LIVE,
                    probe={"fps": connection.fps, "width": width, "height": height},
                ),
                from_statuses=[VideoStatus.LIVE],
            )
            base, self._last_end = _resume_point(session, video.id, self.segment_seconds)
            self._gap_pending = self._last_end is not None
            video_id = video.id
        return video_id, version, base

    def _model_facts(self, version: str) -> tuple[int, bool]:
        """The version's T and whether its flow covers persons, from its registration: the
        watcher itself never needs the model when the workers analyse."""
        from db import repository as repo

        with self.ctx.session_factory() as session:
            row = repo.get_model_version(session=session, version=version)
            meta = {} if row is None else dict(row.meta or {})
        num_frames = int(meta.get("num_frames") or self.ctx.config.num_frames)
        return num_frames, meta.get("flow_region") == "person"

    def _hand_off(self, report: WatchReport, segment: LiveSegment) -> None:
        """Store the segment's frames and row, then send it on (or queue it here)."""
        from db.repository.segments import append_segment, finish_segment, get_segment
        from db.repository.stages import StageUpdate

        start = time.perf_counter()
        index = self._next_index(report.video_id)
        self._store_frames(report.video_id, index, segment)
        timings = {"cut": 0.0}
        # The first segment after a drop (or a restart) records the hole in the timeline
        # between it and the segment before.
        gap = None
        if self._gap_pending and self._last_end is not None:
            gap = max(0.0, segment.start_s - self._last_end)
            timings["gap_before_s"] = gap
        with self.ctx.session_factory.begin() as session:
            segment_id = append_segment(
                session=session,
                video_id=report.video_id,
                start_s=segment.start_s,
                end_s=segment.end_s,
            )
            stored = get_segment(session=session, segment_id=segment_id)
            assert stored is not None
            if stored.index != index:  # another watch of the same name appended meanwhile
                self._store_frames(report.video_id, stored.index, segment)
            timings["cut"] = time.perf_counter() - start
            finish_segment(
                session=session,
                segment_id=segment_id,
                changes=StageUpdate(
                    VideoStatus.EXTRACTING,
                    timings=timings,
                    frames=len(segment.frames),
                    reset_flags=True,
                ),
                from_statuses=[VideoStatus.PENDING],
            )
        if gap is not None:
            self._record_gap(report.video_id, gap)
        self._gap_pending = False
        self._last_end = segment.end_s
        self._closed_at[segment_id] = segment.closed_at
        report.segments += 1
        self.metrics.segments.labels("cut").inc()
        if self.celery is None:
            self._analysis.put(segment_id)
            return
        from tasks.queues import STAGE_QUEUES, task_name

        for stage in ["faces"] if self._person_flow else ["faces", "flow"]:
            self.celery.send_task(task_name(stage), args=[segment_id], queue=STAGE_QUEUES[stage])

    def _next_index(self, video_id: str) -> int:
        from db.repository.segments import get_segments

        with self.ctx.session_factory() as session:
            segments = get_segments(session=session, video_id=video_id)
        return segments[-1].index + 1 if segments else 0

    def _store_frames(self, video_id: str, index: int, segment: LiveSegment) -> None:
        self.ctx.store.put_arrays(
            self.ctx.layout.segment_frames(video_id, index),
            frames=segment.frames,
            successors=segment.successors,
        )

    def _record_gap(self, video_id: str, gap: float) -> None:
        from db import repository as repo
        from db.repository.stages import StageUpdate

        with self.ctx.session_factory.begin() as session:
            video = repo.get_video(session=session, video_id=video_id)
            timings = {} if video is None else dict(video.timings or {})
            repo.finish_stage(
                session=session,
                video_id=video_id,
                changes=StageUpdate(
                    VideoStatus.LIVE,
                    timings={
                        "gaps": float(timings.get("gaps", 0)) + 1,
                        "gap_s": float(timings.get("gap_s", 0)) + gap,
                    },
                ),
                from_statuses=[VideoStatus.LIVE],
            )

    def _end(self, report: WatchReport) -> None:
        """The source ended: the video leaves `live`; aggregated now if all is final."""
        from db import repository as repo
        from db.repository.segments import get_segments

        with self.ctx.session_factory.begin() as session:
            if not get_segments(session=session, video_id=report.video_id):
                repo.transition_video(
                    session=session,
                    video_id=report.video_id,
                    to_status=VideoStatus.FAILED,
                    from_statuses=[VideoStatus.LIVE],
                    error=NO_SEGMENT,
                )
                return
            repo.transition_video(
                session=session,
                video_id=report.video_id,
                to_status=VideoStatus.EXTRACTING,
                from_statuses=[VideoStatus.LIVE],
            )
            video = repo.get_video(session=session, video_id=report.video_id)
            assert video is not None and video.model_version is not None
            repo.aggregate_video(
                session=session,
                video_id=report.video_id,
                model_version=video.model_version,
                linker=self.ctx.linker,
            )

    # --- analysis in this process and results -------------------------------------------

    def _analyse(self) -> None:
        """Run faces, flow and inference of each handed-off segment, in order."""
        from tasks import stages

        runners: dict[str, Callable[[StageContext, str], Any]] = {
            "faces": stages.run_faces,
            "flow": stages.run_flow,
            "inference": stages.run_inference,
        }
        while (segment_id := self._analysis.get()) is not None:
            todo = ["faces"] if self._person_flow else ["faces", "flow"]
            retries = 0
            while todo:
                try:
                    following = runners[todo[0]](self.ctx, segment_id)
                except Exception as exc:
                    if is_outage(exc) and retries < ANALYSIS_RETRIES:
                        # The stages are idempotent: the same one runs again after a pause.
                        log.warning("segment %s met an outage (%s); trying again", segment_id, exc)
                        time.sleep(2.0**retries)
                        retries += 1
                        continue
                    log.exception("analysis of segment %s failed", segment_id)
                    self._fail_segment(segment_id, f"{todo[0]} failed in the watcher: {exc}")
                    break
                todo = todo[1:] + (following if isinstance(following, list) else [])

    def _fail_segment(self, segment_id: str, error: str) -> None:
        """Fail a segment whose analysis here raised: so that its video still ends (the
        finish aggregates the video when it was the last segment)."""
        from db.repository.stages import StageUpdate
        from tasks.stages.segment_rows import finish_segment

        with self.ctx.session_factory.begin() as session:
            finish_segment(
                self.ctx,
                session,
                segment_id,
                StageUpdate(VideoStatus.FAILED, error=error),
                [VideoStatus.EXTRACTING, VideoStatus.INFERENCE],
            )

    def _poll(self, report: WatchReport) -> None:
        while not self._done.wait(POLL_S):
            try:
                self._report_finals(report)
            except Exception as exc:  # an outage: try again on the next round
                log.warning("cannot read the watch's results: %s", exc)

    def _report_finals(self, report: WatchReport) -> None:
        from sqlalchemy import select

        from db.models import Segment, Video
        from db.repository.aggregates import number_live_persons
        from db.repository.result_details import load_result_details

        final = [s.value for s in FINAL_STATUSES]
        with self.ctx.session_factory() as session:
            version = session.scalar(select(Video.model_version).where(Video.id == report.video_id))
            rows = session.execute(
                select(Segment.id, Segment.index, Segment.status, Segment.updated_at).where(
                    Segment.video_id == report.video_id, Segment.id.in_(list(self._closed_at))
                )
            ).all()
            new = [r for r in rows if r.status in final and r.id not in self._reported]
        details = {}
        if new and version is not None:
            with self.ctx.session_factory.begin() as session:
                # Persons numbered across the segments so far, for the lines and the plot.
                number_live_persons(
                    session=session,
                    video_id=report.video_id,
                    model_version=version,
                    linker=self.ctx.linker,
                )
                details = load_result_details(session=session, versions={report.video_id: version})
        by_index = {s.index: s for d in details.values() for s in d.segments}
        for row in sorted(new, key=lambda r: r.index):
            self._reported.add(row.id)
            latency = max(0.0, _epoch(row.updated_at) - self._closed_at[row.id])
            report.latencies.append(latency)
            self.metrics.latency.observe(latency)
            self.metrics.segments.labels(row.status).inc()
            if self.on_segment is not None and row.index in by_index:
                self.on_segment(
                    {
                        "video_id": report.video_id,
                        "video": report.name,
                        **by_index[row.index].to_dict(),
                        "latency_s": round(latency, 3),
                    }
                )
        self._check_backlog(rows)

    def _check_backlog(self, rows: list[Any]) -> None:
        final = {s.value for s in FINAL_STATUSES}
        waiting = [self._closed_at[r.id] for r in rows if r.status not in final]
        oldest = time.time() - min(waiting) if waiting else 0.0
        self.metrics.backlog.set(len(waiting))
        self.metrics.behind.set(oldest)
        behind = oldest > BEHIND_WINDOWS * self.segment_seconds
        if behind and not self._behind_said:
            log.warning(
                "the watch is behind real time: %d segments wait for results, the oldest for "
                "%.1f s; add workers (or use faster hardware)",
                len(waiting),
                oldest,
            )
        elif not behind and self._behind_said and not waiting:
            log.info("the watch caught up with real time")
        self._behind_said = behind or (self._behind_said and bool(waiting))

    def _wait_final(self, report: WatchReport) -> None:
        """Until the workers have finished the video; a signal while waiting ends the wait
        (the workers go on)."""
        from db import repository as repo

        stopped = self.stop.is_set()
        while stopped or not self.stop.is_set():
            with self.ctx.session_factory() as session:
                video = repo.get_video(session=session, video_id=report.video_id)
                if video is None or VideoStatus(video.status).is_final:
                    return
            time.sleep(POLL_S)


def _resume_point(
    session: Session, video_id: str, segment_seconds: float
) -> tuple[float, float | None]:
    """Where a watch of an existing video resumes on its timeline (the next window start
    after its last segment, plus the time since that segment was stored), and where that
    segment ends (None: the video has none)."""
    from db.repository.segments import get_segments

    segments = get_segments(session=session, video_id=video_id)
    if not segments:
        return 0.0, None
    last = segments[-1]
    away = max(0.0, time.time() - _epoch(last.created_at))
    k = -(-(last.end_s + away) // segment_seconds)
    return float(k * segment_seconds), float(last.end_s)


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _rgb(frame: Any) -> Callable[[], Any]:
    return lambda: frame.to_ndarray(format="rgb24")
