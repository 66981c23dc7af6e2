"""Choosing a sensor's threshold ratio and the fleet's --min-consecutive, for sensor_tune.py: the candidates,
one sensor's tuning at every candidate K with the metrics at its old and new ratio, the K recommended for
the fleet, the lines for people, and the ratios file's new text.

Pure: the losses, readings, labels and rules come in, text and numbers go out. The choice of a ratio is
``ratio_choice.tune_ratio``, whose flags come from the one decision step (``detect.decide``) with the
scorer's rules. K (``--min-consecutive``) is one flag of the scoring job for every sensor, so it is chosen
for the fleet (``recommend``) and each sensor's ratio is the one tuned for that K.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from anomaly import detect, evaluation, ratio_choice
from anomaly.errors import ConfigError
from anomaly.review import ModelFacts

# Rules of the scorer for one sensor at a ratio and a K (``model_predict.rules_for``).
RulesFor = Callable[[float, int], detect.Rules]


@dataclass(frozen=True)
class Choice:
    """The ratio chosen for one K, its metrics over the tuning range, and whether it keeps within the budget
    its rule has (--max-false-alarms with labels, --alarm-budget without)."""

    ratio: float
    metrics: evaluation.Metrics
    within_budget: bool


@dataclass(frozen=True)
class SensorTuning:
    """One sensor's tuning: the ratio before, the metrics at it (with the current K), the rule that chose
    (``ratio_choice.BY_LABELS`` or ``BY_BUDGET``) and the choice for every K of the grid; ``skipped`` says
    why there is none."""

    sensor_id: str
    old_ratio: float
    rule: str = ""
    before: evaluation.Metrics | None = None
    choices: Mapping[int, Choice] = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True)
class Objective:
    """What a tuning aims at: with labels the best event F1, or with ``max_false_alarms`` the best event
    recall within it; without labels the smallest ratio within ``alarm_budget`` false-alarm runs a week."""

    max_false_alarms: float | None = None
    alarm_budget: float = 0.5


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


def parse_consecutive(text: str) -> tuple[int, ...]:
    """``1,2,3,4`` -> the sorted whole numbers >= 1 of --min-consecutive to try."""
    try:
        values = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        values = set()
    if not values or min(values) < 1 or max(values) > 1000:
        raise ConfigError(f"--min-consecutive-grid: {text!r} is not a list of whole numbers from 1 to 1000 (1,2,3,4)")
    return tuple(sorted(values))


def at_k(rules: RulesFor, k: int, ratio: float) -> detect.Rules:
    return rules(ratio, k)


def tune_sensor(
    sensor_id: str,
    loss: pd.Series,
    labelled: pd.DatetimeIndex | None,
    facts: ModelFacts,
    old_ratio: float,
    *,
    rules: RulesFor | None,
    readings: pd.Series | None,
    start: pd.Timestamp,
    stop: pd.Timestamp,
    interval: pd.Timedelta,
    candidates: Sequence[float],
    consecutive: Sequence[int],
    current_consecutive: int,
    objective: Objective,
    blame: np.ndarray | None = None,
) -> SensorTuning:
    """The ratio chosen at each K of ``consecutive`` over the tuning range [start, stop), and the metrics
    at the old ratio with ``current_consecutive``; or why not.

    Parameters
    ----------
    loss : float Series by window end, as stored (``review.stored_loss``); it may begin up to
        max(K) - 1 intervals before ``start`` so persistence is decided there as the scorer decided it
    labelled : the labelled interval starts; None, or none whose event has a scored window, tunes the
        ratio by ``objective.alarm_budget``
    rules : the scorer's rules at a ratio and a K; None for a sensor without a model
    readings : the sensor's regular readings (NaN where none) from far enough before ``start`` for the
        level and flat-line detectors (``model_predict.lead``); None when not read
    blame : each window of ``loss``'s losses.BLAME as stored (``review.stored_blame``), for told once
    """
    if facts.threshold is None or rules is None:
        return SensorTuning(sensor_id, old_ratio, skipped=facts.note or "no model")
    first, last = start, stop - interval
    if not ((loss.index >= first) & (loss.index <= last)).any():
        return SensorTuning(
            sensor_id,
            old_ratio,
            skipped="no scores in the tuning range (run sensor_predict.py with --start/--stop over it)",
        )
    grid = evaluation.labels_on_grid(
        labelled if labelled is not None else [], start - (facts.window - 1) * interval, stop, interval
    )
    context = detect.Context(interval=interval, series=readings, first=first, last=last)
    choices, rule = {}, ""
    for k in consecutive:
        try:
            best, table = ratio_choice.tune_ratio(
                loss,
                facts.threshold,
                grid,
                facts.window,
                interval,
                candidates,
                objective.max_false_alarms,
                current=old_ratio,
                alarm_budget=objective.alarm_budget,
                rules=functools.partial(at_k, rules, k),
                context=context,
                blame=blame,
            )
        except ValueError as e:
            return SensorTuning(sensor_id, old_ratio, skipped=str(e))
        row = table[table["chosen"]].iloc[0]
        metrics = evaluation.Metrics(
            **{name: row[name].item() if hasattr(row[name], "item") else row[name] for name in evaluation.METRIC_NAMES}
        )
        choices[k] = Choice(best, metrics, bool(row["within_budget"]))
        rule = str(row["rule"])
    before = evaluation.evaluate(
        ratio_choice.decided_flags(loss, rules(old_ratio, current_consecutive), context, blame),
        grid,
        facts.window,
        interval,
    )
    return SensorTuning(sensor_id, old_ratio, rule, before, choices)


@dataclass(frozen=True)
class FleetChoice:
    """What the fleet gets at one K: the labelled sensors' metrics combined, and how many tuned sensors keep
    within their budget."""

    consecutive: int
    labelled: evaluation.Metrics
    within_budget: int
    tuned: int


def fleet_choices(tunings: Sequence[SensorTuning], consecutive: Sequence[int]) -> list[FleetChoice]:
    """One FleetChoice per K, from the sensors that were tuned."""
    tuned = [t for t in tunings if t.skipped is None]
    return [
        FleetChoice(
            k,
            evaluation.combine([t.choices[k].metrics for t in tuned if t.rule == ratio_choice.BY_LABELS]),
            sum(t.choices[k].within_budget for t in tuned),
            len(tuned),
        )
        for k in consecutive
    ]


def recommend(choices: Sequence[FleetChoice], current: int, objective: Objective) -> int:
    """The K for the fleet: the most sensors within their budget, then the best objective of the labelled
    sensors combined (event F1, or event recall with --max-false-alarms); ties go to the smallest change
    from the ``current`` K, then to the shortest mean delay. Without tuned sensors, ``current``."""
    if not choices or not choices[0].tuned:
        return current

    def key(choice: FleetChoice) -> tuple[float, float, float, float]:
        m = choice.labelled
        score = m.event_f1 if objective.max_false_alarms is None else m.event_recall
        delay = m.mean_delay_min
        return (
            choice.within_budget,
            -1.0 if math.isnan(score) else score,
            -abs(choice.consecutive - current),
            -(math.inf if math.isnan(delay) else delay),
        )

    return max(choices, key=key).consecutive


def _rate(value: float, fmt: str = "{:.2f}") -> str:
    return "–" if math.isnan(value) else fmt.format(value)


def describe_fleet(choice: FleetChoice) -> str:
    """One line per K for people: what the fleet would get with it."""
    m = choice.labelled
    labelled = (
        f"labelled sensors: event F1 {_rate(m.event_f1)}, event recall {_rate(m.event_recall)}, "
        f"false alarms/week {_rate(m.false_alarms_per_week, '{:.1f}')}, mean delay min "
        f"{_rate(m.mean_delay_min, '{:.0f}')}"
        if m.events
        else "no labelled events"
    )
    return (
        f"--min-consecutive {choice.consecutive}: {choice.within_budget} of {choice.tuned} tuned sensors within "
        f"their budget; {labelled}"
    )


def describe(tuning: SensorTuning, consecutive: int, objective: Objective) -> str:
    """One line per sensor for people: old -> new ratio at the chosen K, and the expected effect."""
    choice = tuning.choices.get(consecutive)
    if tuning.skipped or tuning.before is None or choice is None:
        return f"{tuning.sensor_id}: ratio {tuning.old_ratio:g} kept: {tuning.skipped}"
    b, a = tuning.before, choice.metrics
    if tuning.rule == ratio_choice.BY_LABELS:
        pairs = [
            ("event recall", b.event_recall, a.event_recall, "{:.2f}"),
            ("event precision", b.event_precision, a.event_precision, "{:.2f}"),
            ("event F1", b.event_f1, a.event_f1, "{:.2f}"),
            ("false alarms/week", b.false_alarms_per_week, a.false_alarms_per_week, "{:.1f}"),
            ("mean delay min", b.mean_delay_min, a.mean_delay_min, "{:.0f}"),
        ]
        how = f"from labels, {b.events} events"
        budget = "" if choice.within_budget else " (no ratio keeps within --max-false-alarms: fewest false alarms)"
    else:
        pairs = [("false alarms/week", b.false_alarms_per_week, a.false_alarms_per_week, "{:.1f}")]
        how = f"no labelled events: alarm budget {objective.alarm_budget:g}/week"
        budget = "" if choice.within_budget else " (no ratio keeps within --alarm-budget: fewest false alarms)"
    effect = ", ".join(f"{name} {_rate(x, fmt)} -> {_rate(y, fmt)}" for name, x, y, fmt in pairs)
    return (
        f"{tuning.sensor_id}: ratio {tuning.old_ratio:g} -> {choice.ratio:g}{budget}; "
        f"--min-consecutive {consecutive}, {how}; {effect}"
    )


def updated_ratios(current: Mapping[str, object], changes: Mapping[str, float]) -> str:
    """The ratios file's new text: ``current`` with ``changes`` applied, keys sorted, indentation 2."""
    return json.dumps({**current, **changes}, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
