"""`watch`: a live source analysed segment by segment as it arrives.

The source is one video record (`live` while it is watched). Each window the source
completes (`core.video.live.SegmentCutter`) is handed off at once: its sampled frames are stored
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

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.status import FINAL_STATUSES, VideoStatus
from core.video.live import (
    LiveSegment,
    LiveSource,
    SegmentCutter,
    SourceError,
    SourceOptions,
    backoff_delays,
    open_source,
)
from db import repository as repo
from db.models import Segment, Video
from db.repository.aggregates import number_live_persons
from db.repository.result_details import load_result_details
from db.repository.stages import StageUpdate
from tasks import stages
from tasks.context import is_outage
from tasks.queues import STAGE_QUEUES, task_name
from workers.services import live_records as records
from workers.services.live_records import LiveVideo
from workers.services.watch_metrics import WatchMetrics

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session

    from tasks.context import StageContext

log = logging.getLogger("oceanstream.watch")

#: A watch is behind when a cut segment waits longer than this many windows for its result.
BEHIND_WINDOWS = 2.0
POLL_S = 0.25
#: Tries again of a stage run in the watcher that met an outage (pauses 1, 2, 4, 8, 16 s).
ANALYSIS_RETRIES = 5


class NeverOpened(Exception):
    """The source could not be opened within the reconnect window."""


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
        name = name or records.default_name(source)
        video = self._register(source, name, connection, job_kind)
        video_id = video.video_id
        report = WatchReport(video_id, name)
        poller = threading.Thread(target=self._poll, args=(report,), daemon=True)
        analyser = threading.Thread(target=self._analyse, daemon=True)
        poller.start()
        if self.celery is None:
            analyser.start()
        try:
            self._watch(connection, report, video.version, video.resume_at)
        finally:
            self._analysis.put(None)
        with self.ctx.session_factory.begin() as session:
            records.end_live_video(session=session, video_id=video_id, linker=self.ctx.linker)
        if self.celery is None:
            analyser.join()
        if self.wait_for_results:
            self._wait_final(report)
        self._done.set()
        poller.join(5)
        self._report_finals(report)
        with self.ctx.session_factory() as session:
            from db import repository as repo

            stored = repo.get_video(session=session, video_id=video_id)
            report.status = str(stored.status) if stored is not None else report.status
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
        with self.ctx.session_factory() as session:
            num_frames, self._person_flow = records.model_facts(
                session=session, version=version, default_frames=self.ctx.config.num_frames
            )
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

    def _register(self, source: str, name: str, connection: LiveSource, job_kind: str) -> LiveVideo:
        """The live video (made, or found by name) and where its timeline resumes."""
        codec = connection.stream.codec_context
        probe = {"fps": connection.fps, "width": codec.width, "height": codec.height}

        def version(session: Session) -> str:
            return self._active or self.ctx.active_version(session)

        with self.ctx.session_factory.begin() as session:
            video = records.register_live_video(
                session=session,
                name=name,
                source=source,
                job_kind=job_kind,
                probe=probe,
                version=version,
                segment_seconds=self.segment_seconds,
            )
        self._last_end = video.last_end
        self._gap_pending = video.last_end is not None
        return video

    def _hand_off(self, report: WatchReport, segment: LiveSegment) -> None:
        """Store the segment's frames and row, then send it on (or queue it here)."""
        start = time.perf_counter()
        with self.ctx.session_factory() as session:
            index = records.next_segment_index(session=session, video_id=report.video_id)
        self._store_frames(report.video_id, index, segment)
        # The first segment after a drop (or a restart) records the hole in the timeline
        # between it and the segment before.
        gap = None
        if self._gap_pending and self._last_end is not None:
            gap = max(0.0, segment.start_s - self._last_end)
        with self.ctx.session_factory.begin() as session:
            segment_id, stored = records.store_live_segment(
                session=session,
                video_id=report.video_id,
                start_s=segment.start_s,
                end_s=segment.end_s,
                frames=len(segment.frames),
                timings={"cut": time.perf_counter() - start},
                gap_s=gap,
            )
            if stored != index:  # another watch of the same name appended meanwhile
                self._store_frames(report.video_id, stored, segment)
        self._gap_pending = False
        self._last_end = segment.end_s
        self._closed_at[segment_id] = segment.closed_at
        report.segments += 1
        self.metrics.segments.labels("cut").inc()
        if self.celery is None:
            self._analysis.put(segment_id)
            return
        for stage in ["faces"] if self._person_flow else ["faces", "flow"]:
            self.celery.send_task(task_name(stage), args=[segment_id], queue=STAGE_QUEUES[stage])

    def _store_frames(self, video_id: str, index: int, segment: LiveSegment) -> None:
        self.ctx.store.put_arrays(
            self.ctx.layout.segment_frames(video_id, index),
            frames=segment.frames,
            successors=segment.successors,
        )

    # --- analysis in this process and results -------------------------------------------

    def _analyse(self) -> None:
        """Run faces, flow and inference of each handed-off segment, in order."""
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
            latency = max(0.0, records.epoch(row.updated_at) - self._closed_at[row.id])
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
        stopped = self.stop.is_set()
        while stopped or not self.stop.is_set():
            with self.ctx.session_factory() as session:
                video = repo.get_video(session=session, video_id=report.video_id)
                if video is None or VideoStatus(video.status).is_final:
                    return
            time.sleep(POLL_S)


def _rgb(frame: Any) -> Callable[[], Any]:
    return lambda: frame.to_ndarray(format="rgb24")
