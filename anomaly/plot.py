"""Pictures of a sensor's readings, flags and scores, as sensor_plot.py and sensor_evaluate.py draw them.

Each picture has two panels on one time axis (UTC). Top: the mean reading per interval, a red point at the
end of every flagged window (the reading the scorer saw there) and a red band over every event (flagged
windows that share a reading, as sensor_predict.py joins them). Bottom: the score of every scored window
(loss / effective threshold, the same on every sensor) with a line at 1.0, the threshold, on a log scale
when the score spans two decades or more. Points written before the scorer wrote ``score`` get it from their
loss and threshold. matplotlib is imported only when a picture is drawn, and draws on its Agg canvas: no
display is needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import clean
from anomaly import files, review, times
from anomaly.runs import runs
from anomaly.told import joined_within

LOG_SCALE_RATIO = 100.0  # max / min score at which the score panel switches to a log scale (two decades)
FLAG_COLOR = "#d62728"
READING_COLOR = "#1f5f99"
SCORE_COLOR = "#3b3b3b"
NOTE_COLOR = "#6b6b6b"
FIGURE_SIZE_IN = (12.0, 6.5)
DPI = 100


def flag_spans(anomaly: pd.Series, interval: pd.Timedelta, window: int = 1) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Events -> [(first window end, last window end + interval), ...]: flagged windows whose windows (of
    ``window`` intervals) share a reading are one event, as sensor_predict.py makes them (told.joined_within).

    ``anomaly`` is boolean, indexed by window end (sorted). Flags farther apart are two events, whatever
    lies between them.
    """
    flagged = anomaly.fillna(False).astype(bool).to_numpy()
    index = pd.DatetimeIndex(anomaly.index)
    return [
        (index[first], index[last] + interval) for first, last in runs(flagged, index, interval, joined_within(window))
    ]


def use_log_scale(series: pd.Series) -> bool:
    """Whether the positive, finite values (scores) span two decades or more (max / min >= 100)."""
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values) & (values > 0)]
    return bool(len(values) >= 2 and values.max() / values.min() >= LOG_SCALE_RATIO)


def window_scores(scores: pd.DataFrame) -> pd.Series:
    """Each window's score: the ``score`` written with it where there is one, else loss / threshold, which
    is how the scorer computes it (points written before it wrote the field, frames without the column).
    NaN where neither can be had: an interval reported missing has no loss, a zero threshold no ratio.
    """
    computed = pd.to_numeric(scores["loss"], errors="coerce") / pd.to_numeric(scores["threshold"], errors="coerce")
    if "score" in scores:
        written = pd.to_numeric(scores["score"], errors="coerce")
        computed = written.where(written.notna(), computed)
    values = computed.to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series(np.where(np.isfinite(values), values, np.nan), index=scores.index, name="score")


def scores_with_score(frame: pd.DataFrame | None, field: str) -> pd.DataFrame:
    """``review.normalize_scores`` of what ``Database.read_scores`` gave, with a float ``score`` column
    (``window_scores``) on the same rows: each window end once, the last one read."""
    scores = review.normalize_scores(frame, field)
    if frame is not None and "score" in frame and not frame.empty:
        written = pd.to_numeric(frame["score"], errors="coerce").astype("float64")
        scores["score"] = written[~written.index.duplicated(keep="last")].reindex(scores.index)
    scores["score"] = window_scores(scores)
    return scores


def readings_line(
    raw: pd.Series, interval: pd.Timedelta, start: pd.Timestamp, stop: pd.Timestamp, max_gap_points: int
) -> pd.Series:
    """The readings as the jobs see them: on the interval grid of [start, stop), gaps up to
    ``max_gap_points`` intervals filled, longer ones NaN so the line breaks there."""
    return clean.fill_short_gaps(clean.regular(raw, interval, start, stop), max_gap_points)


def describe(scores: pd.DataFrame, spans: list, start: pd.Timestamp, stop: pd.Timestamp) -> str:
    """The subtitle: range, windows scored, flagged and in how many events, the threshold (range)."""
    text = f"{start:%Y-%m-%d %H:%M} – {stop:%Y-%m-%d %H:%M} UTC"
    if scores.empty:
        return text + "  ·  no scores"
    flagged = int(scores["anomaly"].sum())
    in_events = f" in {len(spans)} event{'s' if len(spans) != 1 else ''}" if flagged else ""
    low, high = scores["threshold"].min(), scores["threshold"].max()
    threshold = f"{low:.4g}" if np.isclose(low, high) else f"{low:.4g} – {high:.4g}"
    return f"{text}  ·  {len(scores)} windows scored, {flagged} flagged{in_events}  ·  threshold {threshold}"


def naive(stamps: Any) -> Any:
    """UTC times (a Timestamp or a DatetimeIndex) without a zone: matplotlib reads naive datetimes as UTC,
    the axis formatter says so."""
    return stamps.tz_convert("UTC").tz_localize(None)


def shade(axes: list, spans: list[tuple[pd.Timestamp, pd.Timestamp]], label: str, **style: Any) -> None:
    """A band over each [first, last) of ``spans`` on every axis, drawn with ``style`` (matplotlib's
    axvspan arguments); only the first band of the first axis is labelled, for one legend entry."""
    for axis in axes:
        for number, (first, last) in enumerate(spans):
            axis.axvspan(naive(first), naive(last), label=label if number == 0 and axis is axes[0] else None, **style)


def draw(
    sensor_id: str,
    readings: pd.Series,
    scores: pd.DataFrame,
    *,
    field: str,
    interval: pd.Timedelta,
    start: pd.Timestamp,
    stop: pd.Timestamp,
    window: int = 1,
    no_scores: str | None = None,
) -> Any:
    """A matplotlib Figure (Agg canvas, no display) with the two panels described in the module docstring.

    ``readings``: mean reading per interval start, NaN where the line must break. ``scores``: frame by
    window end with loss, threshold, anomaly and ``field`` (``review.normalize_scores``), and score where
    it was read (``scores_with_score``; else computed, ``window_scores``). ``window``: the sensor's, which
    joins its flags into events. ``no_scores``: why the score panel is empty, written into it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    spans = flag_spans(scores["anomaly"], interval, window)
    fig.suptitle(sensor_id, fontsize=14, fontweight="bold", x=0.01, ha="left")
    top.set_title(describe(scores, spans, start, stop), loc="left", fontsize=9.5, color=NOTE_COLOR)
    shade([top, bottom], spans, "event", color=FLAG_COLOR, alpha=0.12, linewidth=0)
    for axis in (top, bottom):
        axis.grid(True, color="#e3e3e3", linewidth=0.8)
        axis.set_axisbelow(True)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    flagged = scores[scores["anomaly"]]
    _readings_panel(top, readings, flagged, field, interval)
    _score_panel(bottom, window_scores(scores), scores["anomaly"].to_numpy(dtype=bool), no_scores)
    top.set_xlim(naive(start), naive(stop))
    _time_axis(bottom)
    for axis in (top, bottom):
        legend(axis)
    return fig


def _readings_panel(axis: Any, readings: pd.Series, flagged: pd.DataFrame, field: str, interval: pd.Timedelta) -> None:
    if readings.notna().any():
        axis.plot(
            naive(readings.index),
            readings.to_numpy(dtype="float64"),
            color=READING_COLOR,
            linewidth=1.3,
            label=f"mean {field} per {times.format_duration(interval)}",
        )
    else:
        axis.text(
            0.5,
            0.5,
            "no readings in this range",
            transform=axis.transAxes,
            ha="center",
            va="center",
            color=NOTE_COLOR,
            fontsize=11,
        )
    if not flagged.empty:
        axis.scatter(
            naive(flagged.index),
            flagged[field],
            s=22,
            color=FLAG_COLOR,
            zorder=3,
            edgecolors="white",
            linewidths=0.5,
            label="flagged window (reading at its end)",
        )
    axis.set_ylabel(field)


def _score_panel(axis: Any, score: pd.Series, flagged: np.ndarray, no_scores: str | None) -> None:
    if score.empty:
        axis.text(
            0.5,
            0.56,
            "no scores in this range",
            transform=axis.transAxes,
            ha="center",
            va="bottom",
            color=NOTE_COLOR,
            fontsize=12,
            fontweight="bold",
        )
        axis.text(
            0.5,
            0.5,
            no_scores or "",
            transform=axis.transAxes,
            ha="center",
            va="top",
            color=NOTE_COLOR,
            fontsize=10,
            wrap=True,
        )
        axis.set_yticks([])
    else:
        index = naive(score.index)
        axis.plot(index, score.to_numpy(), color=SCORE_COLOR, linewidth=1.0, label="score (loss / threshold)")
        axis.axhline(1.0, color=FLAG_COLOR, linestyle="--", linewidth=1.3, label="threshold (score 1.0)")
        if flagged.any():
            axis.scatter(
                index[flagged], score.to_numpy()[flagged], s=12, color=FLAG_COLOR, zorder=3, label="flagged window"
            )
        if use_log_scale(score):
            axis.set_yscale("log")
    axis.set_ylabel("score")


def _time_axis(axis: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=5, maxticks=10)
    # The subtitle carries the full dates, so the ticks stay short and no offset text floats in the corner.
    formatter = mdates.ConciseDateFormatter(
        locator,
        show_offset=False,
        formats=["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%S.%f"],
        zero_formats=["", "%Y", "%b", "%b %d", "%H:%M", "%H:%M"],
    )
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(formatter)
    axis.set_xlabel("time (UTC)")


def legend(axis: Any) -> None:
    """Lines first, then points, then bands; room above the data so the legend covers none of it."""
    handles, labels = axis.get_legend_handles_labels()
    if not handles:
        return
    order = sorted(
        range(len(handles)),
        key=lambda i: ("Line" not in type(handles[i]).__name__, "Collection" not in type(handles[i]).__name__),
    )
    axis.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper left",
        fontsize=8.5,
        framealpha=0.9,
        ncols=len(handles),
    )
    low, high = axis.get_ylim()
    if axis.get_yscale() == "log":
        axis.set_ylim(low, high * (high / low) ** 0.2)
    else:
        axis.set_ylim(low, high + 0.2 * (high - low))


def save_png(fig: Any, path: Path) -> None:
    """Write the picture through ``files.write_atomic``: a reader never sees half a picture. Makes the
    directory when it is missing."""
    data = io.BytesIO()
    fig.savefig(data, format="png", dpi=DPI, metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, data.getvalue())
