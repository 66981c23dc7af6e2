"""The evaluation report of sensor_evaluate.py: metrics per sensor, a fleet row, Markdown, CSV and pictures.

Text and pictures only; the job writes them. A sensor without labels keeps only the counts of what was
scored and flagged: every other metric is NaN, shown as – in Markdown and left empty in CSV.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from anomaly import evaluation, plot, times
from anomaly.review import ModelFacts

LABEL_COLOR = "#e69f00"
NO_LABELS = "no labels"  # the note of a sensor without labels
UNLABELLED_KEPT = ("windows", "flagged_windows", "flag_runs", "weeks")
MARKDOWN_COLUMNS = (  # (header, Metrics field or key, format)
    ("sensor", "sensor", "{}"),
    ("window", "window", "{}"),
    ("windows", "windows", "{}"),
    ("events", "events", "{}"),
    ("detected", "events_detected", "{}"),
    ("event recall", "event_recall", "{:.2f}"),
    ("event precision", "event_precision", "{:.2f}"),
    ("event F1", "event_f1", "{:.2f}"),
    ("precision", "precision", "{:.2f}"),
    ("recall", "recall", "{:.2f}"),
    ("F1", "f1", "{:.2f}"),
    ("mean delay (min)", "mean_delay_min", "{:.0f}"),
    ("max delay (min)", "max_delay_min", "{:.0f}"),
    ("false alarms", "false_alarms", "{}"),
    ("false alarms / week", "false_alarms_per_week", "{:.1f}"),
    ("note", "note", "{}"),
)


@dataclass(frozen=True)
class SensorResult:
    sensor_id: str
    window: int
    metrics: evaluation.Metrics
    notes: tuple[str, ...] = field(default=())


def evaluate_sensor(
    sensor_id: str,
    scores: pd.DataFrame,
    labelled: pd.DatetimeIndex | None,
    facts: ModelFacts,
    start: pd.Timestamp,
    stop: pd.Timestamp,
    interval: pd.Timedelta,
) -> SensorResult:
    """Metrics of one sensor's stored flags (``scores``: normalized frame by window end) against its labels
    (None: the sensor has none; all metrics then come from an empty label series, with a note)."""
    notes = [facts.note] if facts.note else []
    label_start = start - (facts.window - 1) * interval
    grid = evaluation.labels_on_grid(labelled if labelled is not None else [], label_start, stop, interval)
    if labelled is None:
        notes.append(NO_LABELS)
    if scores.empty:
        notes.append("no scores in range")
    metrics = evaluation.evaluate(scores["anomaly"], grid, facts.window, interval)
    if labelled is None:
        # Without labels only the counts of what was scored and flagged mean anything.
        nan = {name: math.nan for name in evaluation.METRIC_NAMES if name not in UNLABELLED_KEPT}
        metrics = evaluation.Metrics(**dict(asdict(metrics), **nan))
    return SensorResult(sensor_id, facts.window, metrics, tuple(notes))


def result_line(result: SensorResult) -> str:
    """What the job logs of one sensor as it finishes. A sensor without labels has no event counts (NaN,
    not 0: nothing says what it should have flagged), so its line gives what was scored and flagged and
    says there is nothing to evaluate, rather than numbers that would read as a result."""
    m = result.metrics
    notes = [n for n in result.notes if n != NO_LABELS]
    if NO_LABELS in result.notes:
        text = f"{m.windows} windows, {m.flagged_windows} flagged in {m.flag_runs} runs; no labels: nothing to evaluate"
    else:
        text = f"{m.windows} windows, {m.events_detected} of {m.events} events detected, {m.false_alarms} false alarms"
    return text + (f" ({'; '.join(notes)})" if notes else "")


def cell(value: object, fmt: str) -> str:
    """A value as a report shows it: ``fmt`` applied, – for NaN (undefined)."""
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return fmt.format(value)


def summary_rows(results: Sequence[SensorResult]) -> list[dict[str, object]]:
    """One dict per sensor and a last one for the fleet (labelled sensors only), with ``sensor``,
    ``window``, ``note`` and every Metrics field."""
    rows = [
        {"sensor": r.sensor_id, "window": r.window, **asdict(r.metrics), "note": "; ".join(r.notes)} for r in results
    ]
    labelled = [r.metrics for r in results if NO_LABELS not in r.notes]
    fleet = evaluation.combine(labelled)
    rows.append(
        {
            "sensor": "fleet",
            "window": "",
            **asdict(fleet),
            "note": f"{len(labelled)} of {len(results)} sensors labelled",
        }
    )
    return rows


def render_markdown(rows: Sequence[Mapping[str, object]], start: pd.Timestamp, stop: pd.Timestamp) -> str:
    head = [
        f"Evaluation {times.format_time(start)} .. {times.format_time(stop)} "
        f"(window ends; rates 0-1, – where undefined)",
        "",
        "| " + " | ".join(h for h, _, _ in MARKDOWN_COLUMNS) + " |",
        "| " + " | ".join("---" if key in ("sensor", "note") else "---:" for _, key, _ in MARKDOWN_COLUMNS) + " |",
    ]
    body = []
    for row in rows:
        cells = [cell(row[key], fmt).replace("|", "\\|") for _, key, fmt in MARKDOWN_COLUMNS]
        if row["sensor"] == "fleet":
            cells[0] = "**fleet**"
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join(head + body) + "\n"


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows with every metric, rates rounded to 6 places, NaN as an empty cell."""
    columns = ["sensor", "window", *evaluation.METRIC_NAMES, "note"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                ""
                if isinstance(row[c], float) and math.isnan(row[c])
                else (round(row[c], 6) if isinstance(row[c], float) else row[c])
                for c in columns
            ]
        )
    return text.getvalue()


def draw_sensor(
    result: SensorResult,
    readings: pd.Series,
    scores: pd.DataFrame,
    labelled: pd.DatetimeIndex | None,
    *,
    field: str,
    interval: pd.Timedelta,
    start: pd.Timestamp,
    stop: pd.Timestamp,
) -> Any:
    """plot.draw's two panels (readings with flagged windows; loss with the threshold it was compared
    with), plus every labelled event shaded and the sensor's metrics in the title."""
    reason = "not scored in this range (run sensor_predict.py with --start/--stop)" if scores.empty else None
    fig = plot.draw(
        result.sensor_id,
        readings,
        scores,
        field=field,
        interval=interval,
        start=start,
        stop=stop,
        window=result.window,
        no_scores=reason,
    )
    top, bottom = fig.axes[:2]
    grid = evaluation.labels_on_grid(labelled if labelled is not None else [], start, stop, interval)
    events = [(first, last + interval) for first, last in evaluation.label_events(grid, interval)]
    plot.shade([top, bottom], events, "labelled event", color=LABEL_COLOR, alpha=0.28, linewidth=0, zorder=0)
    handles, names = top.get_legend_handles_labels()
    if handles:
        top.legend(handles, names, loc="upper left", fontsize=8.5, framealpha=0.9, ncols=len(handles))
    m = result.metrics
    summary = (
        f"events {m.events_detected}/{m.events} detected · event precision {cell(m.event_precision, '{:.2f}')}"
        f" · mean delay {cell(m.mean_delay_min, '{:.0f}')} min · false alarms {m.false_alarms}"
        f" ({cell(m.false_alarms_per_week, '{:.1f}')}/week)"
    )
    if result.notes:
        summary += " · " + "; ".join(result.notes)
    fig.text(0.99, 0.985, summary, ha="right", va="top", fontsize=9.5, color=plot.NOTE_COLOR)
    return fig
