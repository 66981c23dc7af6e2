"""Choosing a sensor's threshold ratio: the flags each candidate ratio gives, decided as the scorer decides
them (``decided_flags``, by ``detect.decide``), scored with the metrics of evaluation.py, and the pick among
the candidates (``tune_ratio``, ``preferred``). Pure: no I/O; sensor_tune.py reads the losses, readings and
labels and hands them in (anomaly/tuning.py).

Flags are by window end, labels by interval start, on one interval grid (UTC); evaluation.py's docstring
defines the two axes and every metric the choice reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from anomaly import detect
from anomaly.evaluation import evaluate


def decided_flags(
    loss: pd.Series, rules: detect.Rules, context: detect.Context, blame: np.ndarray | None = None
) -> pd.Series:
    """The flags ``detect.decide`` gives the windows of ``loss`` under ``rules``: decided as sensor_predict.py
    decides them, so tuning can never disagree with scoring. A NaN loss is not flagged by the threshold.

    Parameters
    ----------
    loss : float Series by window end (a DatetimeIndex on the ``context.interval`` grid), one entry per window
    rules : the scorer's rules (``model_predict.rules_for``), or just a threshold
    context : the grid and, when known, the readings (``series``), which the level and flat-line detectors
        read; windows before ``context.first`` or after ``context.last`` only inform persistence and told once
    blame : each window's losses.BLAME as the scorer stored it (review.stored_blame); None when not known

    Returns
    -------
    boolean Series: the windows of ``loss`` whose ends lie in [first, last] (all of them without bounds)
    """
    losses = pd.to_numeric(loss, errors="coerce").to_numpy(dtype="float64")
    ends = pd.DatetimeIndex(loss.index)
    # Readings are known only when the caller read them; no detector of the threshold itself reads them.
    values = np.full(len(ends), np.nan) if context.series is None else context.series.reindex(ends).to_numpy()
    decided = detect.decide(ends, values, losses, rules, context, blame=blame)
    # decide may add missing points (no reading): they are not windows, and never flags here.
    flags = pd.Series(decided.anomaly, index=decided.ends).reindex(ends, fill_value=False)
    keep = np.ones(len(ends), dtype=bool)
    if context.first is not None:
        keep &= ends >= context.first
    if context.last is not None:
        keep &= ends <= context.last
    return pd.Series(flags.to_numpy(dtype=bool)[keep], index=loss.index[keep], dtype=bool)


def _check_ratio(ratio: float) -> None:
    if not (isinstance(ratio, (int, float, np.floating)) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio must be a positive number, not {ratio!r}")


def flags_for_ratio(loss: pd.Series, threshold: float, ratio: float, interval: pd.Timedelta) -> pd.Series:
    """``loss > threshold * ratio`` by window end, decided by ``detect.decide`` with no other rule; a NaN
    loss is not flagged.

    ``loss``: float Series by window end (a DatetimeIndex on the ``interval`` grid); returns a boolean
    Series on the same index.
    """
    if not (isinstance(threshold, (int, float, np.floating)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, not {threshold!r}")
    _check_ratio(ratio)
    return decided_flags(loss, detect.Rules(threshold=threshold * ratio), detect.Context(interval=interval))


# How a ratio was chosen (the table's ``rule`` column).
BY_LABELS = "labels"
BY_BUDGET = "alarm budget"


def _change(ratio: float, current: float) -> float:
    """How far ``ratio`` is from ``current``: a ratio multiplies the threshold, so halving and doubling are
    the same change (rounded, so x0.8 and x1.25 tie)."""
    return round(abs(math.log(ratio / current)), 9)


def preferred(scores: Sequence[float], ratios: Sequence[float], delays: Sequence[float], current: float) -> int:
    """The index of the candidate ratio to choose: the highest score (NaN lowest); among equal scores the
    smallest change from the ``current`` ratio, so a tuning that finds nothing better leaves a sensor as it
    is; then the shortest mean delay in minutes (NaN, nothing detected: longest); then the larger ratio,
    which flags less. ``scores``, ``ratios`` and ``delays`` are parallel, one entry per candidate."""

    def key(i: int) -> tuple[float, float, float, float]:
        score = -math.inf if math.isnan(scores[i]) else scores[i]
        delay = math.inf if math.isnan(delays[i]) else delays[i]
        return score, -_change(ratios[i], current), -delay, ratios[i]

    return max(range(len(ratios)), key=key)


def tune_ratio(
    loss: pd.Series,
    threshold: float,
    labels: pd.Series,
    window: int,
    interval: pd.Timedelta,
    ratios: Iterable[float],
    max_false_alarms: float | None = None,
    *,
    current: float = 1.0,
    alarm_budget: float | None = None,
    rules: Callable[[float], detect.Rules] | None = None,
    context: detect.Context | None = None,
    blame: np.ndarray | None = None,
) -> tuple[float, pd.DataFrame]:
    """Evaluate every candidate ratio and pick one.

    With a labelled event that has a scored window (rule ``labels``): without ``max_false_alarms``, the
    highest event F1; with it, the highest event recall among the ratios whose false alarms per week are
    <= ``max_false_alarms``, or, when no ratio keeps within it, the fewest false alarms per week (the
    table's ``within_budget`` column is then all False).

    Without one (rule ``alarm budget``, only when ``alarm_budget`` is given): every flag run is a false
    alarm, and the smallest ratio whose false-alarm runs per week stay within ``alarm_budget`` is chosen
    (training's --alarm-budget, calibration.py), or, when none does, the fewest false alarms per week.

    Ties go to the smallest change from the ``current`` ratio, then to the shortest mean detection delay,
    then to the larger ratio (``preferred``).

    Flags come from ``decided_flags`` with ``rules(ratio)``, ``context`` and ``blame`` (default:
    ``threshold * ratio`` and no other rule, just the interval).

    Returns
    -------
    (best ratio, table) : the table has one row per ratio, sorted by ratio: ``ratio``, every Metrics
        field, ``rule``, ``within_budget`` (True without a budget) and ``chosen``.

    Raises
    ------
    ValueError : no candidate ratio, or no labelled event has a scored window and there is no
        ``alarm_budget`` (nothing to tune on).
    """
    candidates = sorted({round(float(r), 9) for r in ratios})
    if not candidates:
        raise ValueError("no candidate ratio to try")
    _check_ratio(current)
    context = context or detect.Context(interval=interval)
    rows = []
    for ratio in candidates:
        decided = (
            decided_flags(loss, rules(ratio), context, blame)
            if rules is not None
            else flags_for_ratio(loss, threshold, ratio, interval)
        )
        rows.append({"ratio": ratio, **asdict(evaluate(decided, labels, window, interval))})
    table = pd.DataFrame(rows)
    if table["events"].iloc[0] > 0:
        table["rule"] = BY_LABELS
        if max_false_alarms is None:
            table["within_budget"] = True
            key = table["event_f1"].fillna(-1.0)
        else:
            table["within_budget"] = table["false_alarms_per_week"] <= max_false_alarms
            if table["within_budget"].any():
                key = table["event_recall"].fillna(-1.0).where(table["within_budget"], -2.0)
            else:
                key = -table["false_alarms_per_week"]
    elif alarm_budget is not None:
        table["rule"] = BY_BUDGET
        table["within_budget"] = table["false_alarms_per_week"] <= alarm_budget
        if table["within_budget"].any():
            key = (-table["ratio"]).where(table["within_budget"], -math.inf)
        else:
            key = -table["false_alarms_per_week"]
    else:
        raise ValueError("no labelled event has a scored window in this range: nothing to tune on")
    best = preferred(key.astype("float64").tolist(), table["ratio"].tolist(), table["mean_delay_min"].tolist(), current)
    table["chosen"] = table.index == best
    return float(table["ratio"].iloc[best]), table
