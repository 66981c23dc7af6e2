"""Choosing a sensor's threshold ratio from its labels, for sensor_tune.py: the candidates, one sensor's
tuning with the metrics at its old and new ratio, its line for people, and the ratios file's new text.

Pure: the losses, labels and model facts come in, text and numbers go out. The choice itself is
``evaluation.tune_ratio``, whose flags come from the one decision step (``detect.decide``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anomaly import evaluation
from anomaly.errors import ConfigError
from anomaly.review import ModelFacts


@dataclass(frozen=True)
class SensorTuning:
    """One sensor's tuning: the ratio before and after and the metrics at both; ``skipped`` says why not."""

    sensor_id: str
    old_ratio: float
    new_ratio: float | None = None
    before: evaluation.Metrics | None = None
    after: evaluation.Metrics | None = None
    within_budget: bool = True
    skipped: str | None = None


def parse_grid(text: str) -> tuple[float, ...]:
    """``0.5:5:0.25`` (start, stop inclusive, step) or ``0.8,1,1.5`` -> sorted positive ratios."""
    try:
        if ":" in text:
            first, last, step = (float(part) for part in text.split(":"))
            if not (step > 0 and first <= last) or (last - first) / step > 10_000:
                raise ValueError
            values = np.round(np.arange(first, last + step / 2, step), 6)
        else:
            values = np.array([float(part) for part in text.split(",") if part.strip()])
    except ValueError:
        values = np.array([])
    if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ConfigError(
            f"--ratios-grid: {text!r} is not START:STOP:STEP (0.5:5:0.25) or a list of positive ratios (0.8,1,1.5)"
        )
    return tuple(sorted({float(v) for v in values}))


def tune_sensor(
    sensor_id: str,
    loss: pd.Series,
    labelled: pd.DatetimeIndex | None,
    facts: ModelFacts,
    old_ratio: float,
    *,
    start: pd.Timestamp,
    stop: pd.Timestamp,
    interval: pd.Timedelta,
    candidates: Sequence[float],
    max_false_alarms: float | None,
) -> SensorTuning:
    """The chosen ratio and the metrics at the old and new ratio over the tuning range [start, stop); or why
    not. ``loss``: float Series by window end, as stored."""
    if facts.threshold is None:
        return SensorTuning(sensor_id, old_ratio, skipped=facts.note or "no model")
    if labelled is None:
        return SensorTuning(sensor_id, old_ratio, skipped="no labels")
    if loss.empty:
        return SensorTuning(
            sensor_id,
            old_ratio,
            skipped="no scores in the tuning range (run sensor_predict.py with --start/--stop over it)",
        )
    grid = evaluation.labels_on_grid(labelled, start - (facts.window - 1) * interval, stop, interval)
    try:
        best, table = evaluation.tune_ratio(
            loss, facts.threshold, grid, facts.window, interval, candidates, max_false_alarms
        )
    except ValueError as e:
        return SensorTuning(sensor_id, old_ratio, skipped=str(e))
    before = evaluation.evaluate(
        evaluation.flags_for_ratio(loss, facts.threshold, old_ratio, interval), grid, facts.window, interval
    )
    row = table[table["chosen"]].iloc[0]
    after = evaluation.Metrics(
        **{name: row[name].item() if hasattr(row[name], "item") else row[name] for name in evaluation.METRIC_NAMES}
    )
    return SensorTuning(sensor_id, old_ratio, best, before, after, bool(row["within_budget"]))


def _rate(value: float, fmt: str = "{:.2f}") -> str:
    return "–" if math.isnan(value) else fmt.format(value)


def describe(tuning: SensorTuning) -> str:
    """One line per sensor for people: old -> new ratio and the expected effect."""
    if tuning.skipped or tuning.before is None or tuning.after is None or tuning.new_ratio is None:
        return f"{tuning.sensor_id}: ratio {tuning.old_ratio:g} kept: {tuning.skipped}"
    b, a = tuning.before, tuning.after
    pairs = [
        ("event recall", b.event_recall, a.event_recall, "{:.2f}"),
        ("event precision", b.event_precision, a.event_precision, "{:.2f}"),
        ("event F1", b.event_f1, a.event_f1, "{:.2f}"),
        ("false alarms/week", b.false_alarms_per_week, a.false_alarms_per_week, "{:.1f}"),
        ("mean delay min", b.mean_delay_min, a.mean_delay_min, "{:.0f}"),
    ]
    effect = ", ".join(f"{name} {_rate(x, fmt)} -> {_rate(y, fmt)}" for name, x, y, fmt in pairs)
    budget = "" if tuning.within_budget else " (no ratio keeps within --max-false-alarms: fewest false alarms)"
    return (
        f"{tuning.sensor_id}: ratio {tuning.old_ratio:g} -> {tuning.new_ratio:g}{budget}; {b.events} events, {effect}"
    )


def updated_ratios(current: Mapping[str, object], changes: Mapping[str, float]) -> str:
    """The ratios file's new text: ``current`` with ``changes`` applied, keys sorted, indentation 2."""
    return json.dumps({**current, **changes}, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
