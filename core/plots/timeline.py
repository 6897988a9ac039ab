"""Drawing a video's five traits over time, one line per person, as a PNG.

Pure: the data in (`TimelinePlotData`, plain numbers), a matplotlib figure or a PNG out. Like
`core.plots.attention` it uses matplotlib's Agg canvas and never pyplot, so it changes no
global backend and loads no TensorFlow.

A panel per trait, time on the shared x axis. Each person's segment scores are a line
through the segments' middles (broken where the person is absent) with a thin bar across
each segment, its aggregate a dashed line over the time it was seen with the spread (one
standard deviation across its segments) shaded around it. Segments without a face, failed
ones and unfinished ones are shaded bands across every panel; each shot change found
(`core.persons.shots`) is a dotted vertical line across every panel. Scores from an untrained model
carry a warning on the figure itself, so a copied image never passes for an assessment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.traits import TRAITS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

UNTRAINED_WARNING = "untrained model: scores from seeded weights, not a personality assessment"
#: Segment status -> (band colour, legend label); segments in other states are not shaded.
BANDS = {
    "no_face": ("0.55", "no face"),
    "failed": ("tab:red", "failed"),
    "pending": ("tab:blue", "not finished"),
    "ingesting": ("tab:blue", "not finished"),
    "extracting": ("tab:blue", "not finished"),
    "inference": ("tab:blue", "not finished"),
}
WIDTH_IN, HEIGHT_IN, DPI = 10.0, 9.0, 100


@dataclass(frozen=True)
class SegmentSpan:
    index: int
    start_s: float
    end_s: float
    status: str


@dataclass(frozen=True)
class PersonPoint:
    """One person's scores in one segment (`TRAITS` order)."""

    segment: int
    start_s: float
    end_s: float
    scores: tuple[float, ...]

    @property
    def middle_s(self) -> float:
        return (self.start_s + self.end_s) / 2


@dataclass(frozen=True)
class PersonSeries:
    """One person: its segment scores and, once aggregated, its aggregate and spread."""

    person: int
    points: tuple[PersonPoint, ...]
    scores: tuple[float, ...] | None = None
    spread: tuple[float, ...] | None = None
    first_s: float | None = None
    last_s: float | None = None
    main: bool = False

    @property
    def label(self) -> str:
        return f"person {self.person}" + (" (main)" if self.main else "")


@dataclass(frozen=True)
class TimelinePlotData:
    title: str
    segments: tuple[SegmentSpan, ...]
    persons: tuple[PersonSeries, ...]
    #: False: scores from an untrained model (the figure says so); None: no scores.
    trained: bool | None
    duration_s: float | None = None
    #: Video times at which a new shot is first seen (`core.persons.shots`).
    shots: tuple[float, ...] = ()

    @property
    def end_s(self) -> float:
        ends = [s.end_s for s in self.segments]
        return max([*ends, self.duration_s or 0.0]) or 1.0


def build_timeline_figure(data: TimelinePlotData) -> Figure:
    """The figure (`WIDTH_IN` x `HEIGHT_IN` inches), on an Agg canvas, not yet saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(TRAITS), 1, sharex=True, squeeze=False)[:, 0]
    colours = _colours(data.persons)
    for trait_index, (trait, axis) in enumerate(zip(TRAITS, axes, strict=True)):
        _draw_bands(axis, data.segments, legend=trait_index == 0)
        for series in data.persons:
            _draw_person(axis, series, trait_index, colours[series.person])
        axis.set_ylim(0.0, 1.0)
        axis.set_xlim(0.0, data.end_s)
        axis.set_ylabel(trait)
        axis.grid(axis="y", alpha=0.3)
        for boundary in sorted({s.start_s for s in data.segments} - {0.0}):
            axis.axvline(boundary, color="0.8", linewidth=0.6, zorder=0)
        for number, cut in enumerate(data.shots):
            axis.axvline(
                cut,
                color="0.35",
                linestyle=":",
                linewidth=1.0,
                zorder=1,
                label="shot change" if trait_index == 0 and number == 0 else None,
            )
    axes[-1].set_xlabel("time (s)")
    if not any(s.points for s in data.persons):
        axes[0].text(
            0.5,
            0.5,
            "no person scored",
            ha="center",
            va="center",
            transform=axes[0].transAxes,
            color="0.3",
        )
    handles, labels = axes[0].get_legend_handles_labels()
    if any(s.scores is not None for s in data.persons):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=1.0))
        labels.append("aggregate ± spread")
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6))
    figure.suptitle(data.title)
    if data.trained is False:
        # An axes title, so the constrained layout makes room for it under the suptitle.
        axes[0].set_title(UNTRAINED_WARNING, color="tab:red", fontweight="bold")
    return figure


def figure_texts(figure: Figure) -> list[str]:
    """Every text drawn on `figure` (titles, labels, legend, notes), in drawing order."""
    from matplotlib.text import Text

    return [text.get_text() for text in figure.findobj(Text) if text.get_text()]


def plot_timeline(data: TimelinePlotData, save_path: str | Path) -> Path:
    """Draw `data` to a PNG at `save_path` (folders made as needed); returns the path."""
    path = Path(save_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_timeline_figure(data).savefig(path, dpi=DPI, format="png")
    return path


def _colours(persons: Sequence[PersonSeries]) -> dict[int, str]:
    palette = [f"C{i}" for i in range(10)]
    return {s.person: palette[s.person % len(palette)] for s in persons}


def _draw_bands(axis: Axes, segments: Sequence[SegmentSpan], *, legend: bool) -> None:
    labelled: set[str] = set()
    for segment in segments:
        band = BANDS.get(segment.status)
        if band is None:
            continue
        colour, label = band
        first = legend and label not in labelled
        labelled.add(label)
        axis.axvspan(
            segment.start_s,
            segment.end_s,
            color=colour,
            alpha=0.18,
            hatch="//" if segment.status == "failed" else None,
            linewidth=0,
            label=f"segment: {label}" if first else None,
            zorder=0,
        )


def _draw_person(axis: Axes, series: PersonSeries, trait: int, colour: str) -> None:
    xs: list[float] = []
    ys: list[float] = []
    previous: int | None = None
    for point in sorted(series.points, key=lambda p: p.segment):
        if previous is not None and point.segment != previous + 1:
            xs.append(float("nan"))  # absent in between: break the line
            ys.append(float("nan"))
        xs.append(point.middle_s)
        ys.append(point.scores[trait])
        previous = point.segment
    axis.plot(
        xs,
        ys,
        color=colour,
        marker="o",
        markersize=4,
        linewidth=2.0 if series.main else 1.4,
        label=series.label,
    )
    # Each score holds for its whole segment: a thin bar across the segment under the point.
    points = series.points
    axis.hlines(
        [p.scores[trait] for p in points],
        [p.start_s for p in points],
        [p.end_s for p in points],
        color=colour,
        linewidth=1.0,
        alpha=0.5,
    )
    if series.scores is None or series.first_s is None or series.last_s is None:
        return
    mean = series.scores[trait]
    spread = series.spread[trait] if series.spread is not None else 0.0
    span = [series.first_s, series.last_s]
    axis.plot(span, [mean, mean], color=colour, linestyle="--", linewidth=1.0)
    axis.fill_between(
        span, [mean - spread] * 2, [mean + spread] * 2, color=colour, alpha=0.15, linewidth=0
    )
