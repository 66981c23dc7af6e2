#!/usr/bin/env python3
"""Draw a PNG of a sensor's recent readings, flags, loss and threshold, for people who would rather look than read.

Each picture has two panels on one time axis (UTC). Top: the mean reading per --interval, a red point at
the end of every flagged window (the reading the scorer saw there) and a red band over every run of
consecutive flagged windows. Bottom: the loss of every scored window and the threshold it was compared
with (the model's threshold times the sensor's ratio at scoring time), on a log scale when the loss spans
two decades or more. A window's score belongs to its last interval, so a band starts at the first bad
reading and runs on for up to one window after the last.

One PNG per --sensor. --output is a file when it ends in .png (one sensor only), else a directory,
created if missing, where each picture is named like the sensor's model directory:
<readable id>-<hash>.png. The default is the current directory.

A sensor with readings but no scores in the range is still drawn, with a note in the loss panel saying
why (no model in --models-dir yet, or not scored in this range) and a warning line; that counts as drawn.
A sensor with neither readings nor scores in the range gets no picture and an error line.

Exit status: 0 when every sensor was drawn, 1 when any had nothing to draw or failed, or the database
could not be used, 2 for bad configuration. --ratios, --windows and --health-measurement are accepted
like the jobs' and not used: the threshold drawn is the one stored with each score, and nothing is written.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

import artifacts
import clean
from anomaly import logs, settings, times
from anomaly.errors import ConfigError
from anomaly.settings import Connection, Schema
from influx_interact import Influx, InfluxError

logger = logging.getLogger("sensor_plot")

LOG_SCALE_RATIO = 100.0  # max / min loss at which the loss panel switches to a log scale (two decades)
FLAG_COLOR = "#d62728"
READING_COLOR = "#1f5f99"
LOSS_COLOR = "#3b3b3b"
NOTE_COLOR = "#6b6b6b"
FIGURE_SIZE_IN = (12.0, 6.5)
DPI = 100


@dataclass(frozen=True)
class PlotSettings:
    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    models_dir: Path
    chunk_size: int
    start: pd.Timestamp
    stop: pd.Timestamp
    outputs: Mapping[str, Path]

    @property
    def max_gap_points(self) -> int:
        return int(self.max_gap / self.interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    # The jobs default to every sensor found; a picture is asked for by name.
    for action in parser._actions:
        if action.dest == "sensor":
            action.required = True
            action.help = "sensor id to draw, repeatable: one PNG each (required)"
    plot = parser.add_argument_group("picture")
    plot.add_argument("--start", default="-7d", help="start of the range: RFC3339 or relative (default -7d)")
    plot.add_argument("--stop", default="now", help="end of the range: RFC3339, relative or now (default now)")
    plot.add_argument("--output", type=Path, default=Path("."),
                      help="a .png file (one sensor) or a directory (default: the current directory)")
    plot.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")
    return parser


def output_paths(output: Path, sensor_ids: Sequence[str]) -> dict[str, Path]:
    """Where each sensor's picture goes: ``output`` itself when it ends in .png, else a file inside it."""
    if output.suffix.lower() == ".png":
        if len(sensor_ids) > 1:
            raise ConfigError(f"--output {output} names one file but {len(sensor_ids)} sensors were given; "
                              f"name a directory to get one PNG per sensor")
        return {sensor_ids[0]: output}
    return {s: output / (artifacts.sensor_dir(Path(), s).name + ".png") for s in sensor_ids}


def settings_from_args(args: argparse.Namespace) -> PlotSettings:
    now = times.current_time(args.now)
    interval = times.parse_duration(args.interval, "--interval")
    start = times.parse_time(args.start, now, "--start").floor(interval)
    stop = times.parse_time(args.stop, now, "--stop")
    if start >= stop:
        raise ConfigError(f"--start {args.start} must be before --stop {args.stop}")
    if args.shard:
        raise ConfigError("--shard: sensor_plot.py draws the sensors named with --sensor; leave --shard out")
    sensors = tuple(dict.fromkeys(args.sensor))
    return PlotSettings(
        connection=settings.connection_from_args(args),
        schema=settings.schema_from_args(args),
        sensors=sensors,
        interval=interval,
        max_gap=times.parse_duration(args.max_gap, "--max-gap"),
        models_dir=args.models_dir,
        chunk_size=settings.positive_int("--chunk-size", args.chunk_size),
        start=start,
        stop=stop,
        outputs=MappingProxyType(output_paths(args.output, sensors)),
    )


# ---------------------------------------------------------------- pure helpers


def flag_spans(anomaly: pd.Series, interval: pd.Timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Runs of consecutive flagged windows -> [(first window end, last window end + interval), ...].

    ``anomaly`` is boolean, indexed by window end (sorted). Windows are consecutive when their ends are
    one interval apart; an unflagged window, or a missing one, ends a run.
    """
    flagged = anomaly.index[anomaly.fillna(False).astype(bool).to_numpy()]
    if flagged.empty:
        return []
    breaks = np.flatnonzero((flagged[1:] - flagged[:-1]) != interval) + 1
    return [(run[0], run[-1] + interval) for run in np.split(flagged, breaks)]


def use_log_scale(loss: pd.Series) -> bool:
    """Whether the positive, finite losses span two decades or more (max / min >= 100)."""
    values = loss.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values) & (values > 0)]
    return bool(len(values) >= 2 and values.max() / values.min() >= LOG_SCALE_RATIO)


def readings_line(raw: pd.Series, interval: pd.Timedelta, start: pd.Timestamp, stop: pd.Timestamp,
                  max_gap_points: int) -> pd.Series:
    """The readings as the jobs see them: on the interval grid of [start, stop), gaps up to
    ``max_gap_points`` intervals filled, longer ones NaN so the line breaks there."""
    series = clean.regularize(clean.validate_series(raw), interval, start, stop)
    return clean.fill_short_gaps(series, max_gap_points)


def no_scores_reason(has_model: bool, models_dir: Path) -> str:
    if not has_model:
        return f"no model in {models_dir} (--models-dir): run sensor_training.py, then sensor_predict.py"
    return "it has a model: sensor_predict.py has not scored this range (widen --start/--stop, or run it)"


def describe(scores: pd.DataFrame, spans: list, start: pd.Timestamp, stop: pd.Timestamp) -> str:
    """The subtitle: range, windows scored, flagged and in how many runs, the threshold (range)."""
    text = f"{start:%Y-%m-%d %H:%M} – {stop:%Y-%m-%d %H:%M} UTC"
    if scores.empty:
        return text + "  ·  no scores"
    flagged = int(scores["anomaly"].sum())
    runs = f" in {len(spans)} run{'s' if len(spans) != 1 else ''}" if flagged else ""
    low, high = scores["threshold"].min(), scores["threshold"].max()
    threshold = f"{low:.4g}" if np.isclose(low, high) else f"{low:.4g} – {high:.4g}"
    return f"{text}  ·  {len(scores)} windows scored, {flagged} flagged{runs}  ·  threshold {threshold}"


def normalize_scores(frame: pd.DataFrame | None, field: str) -> pd.DataFrame:
    """read_scores' frame with float loss, threshold and reading and a boolean anomaly, sorted by time."""
    if frame is None or frame.empty:
        return pd.DataFrame({"loss": [], "threshold": [], "anomaly": [], field: []},
                            index=pd.DatetimeIndex([], tz="UTC")).astype({"anomaly": bool})
    out = pd.DataFrame({
        "loss": pd.to_numeric(frame["loss"], errors="coerce").astype("float64"),
        "threshold": pd.to_numeric(frame["threshold"], errors="coerce").astype("float64"),
        "anomaly": frame["anomaly"].map(lambda v: v is True or v == 1).astype(bool),
        field: pd.to_numeric(frame[field], errors="coerce").astype("float64"),
    }, index=frame.index)
    return out[~out.index.duplicated(keep="last")].sort_index()


# ---------------------------------------------------------------- drawing


def _naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """UTC times without a zone: matplotlib reads naive datetimes as UTC, the axis formatter says so."""
    return index.tz_convert("UTC").tz_localize(None)


def draw(sensor_id: str, readings: pd.Series, scores: pd.DataFrame, *, field: str, interval: pd.Timedelta,
         start: pd.Timestamp, stop: pd.Timestamp, no_scores: str | None = None):
    """A matplotlib Figure (Agg canvas, no display) with the two panels described in the module docstring.

    ``readings``: mean reading per interval start, NaN where the line must break. ``scores``: frame by
    window end with loss, threshold, anomaly and ``field`` (normalize_scores). ``no_scores``: why the loss
    panel is empty, written into it.
    """
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    spans = flag_spans(scores["anomaly"], interval)
    fig.suptitle(sensor_id, fontsize=14, fontweight="bold", x=0.01, ha="left")
    top.set_title(describe(scores, spans, start, stop), loc="left", fontsize=9.5, color=NOTE_COLOR)

    for axis in (top, bottom):
        for number, (first, last) in enumerate(spans):
            axis.axvspan(_naive(pd.DatetimeIndex([first]))[0], _naive(pd.DatetimeIndex([last]))[0],
                         color=FLAG_COLOR, alpha=0.12, linewidth=0,
                         label="run of flagged windows" if number == 0 and axis is top else None)
        axis.grid(True, color="#e3e3e3", linewidth=0.8)
        axis.set_axisbelow(True)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)

    if readings.notna().any():
        top.plot(_naive(readings.index), readings.to_numpy(dtype="float64"), color=READING_COLOR, linewidth=1.3,
                 label=f"mean {field} per {times.format_duration(interval)}")
    else:
        top.text(0.5, 0.5, "no readings in this range", transform=top.transAxes, ha="center", va="center",
                 color=NOTE_COLOR, fontsize=11)
    flagged = scores[scores["anomaly"]]
    if not flagged.empty:
        top.scatter(_naive(flagged.index), flagged[field], s=22, color=FLAG_COLOR, zorder=3,
                    edgecolors="white", linewidths=0.5, label="flagged window (reading at its end)")
    top.set_ylabel(field)

    if scores.empty:
        bottom.text(0.5, 0.56, "no scores in this range", transform=bottom.transAxes, ha="center", va="bottom",
                    color=NOTE_COLOR, fontsize=12, fontweight="bold")
        bottom.text(0.5, 0.5, no_scores or "", transform=bottom.transAxes, ha="center", va="top",
                    color=NOTE_COLOR, fontsize=10, wrap=True)
        bottom.set_yticks([])
    else:
        index = _naive(scores.index)
        bottom.plot(index, scores["loss"], color=LOSS_COLOR, linewidth=1.0, label="loss")
        bottom.step(index, scores["threshold"], where="post", color=FLAG_COLOR, linestyle="--", linewidth=1.3,
                    label="threshold (model × ratio)")
        if not flagged.empty:
            bottom.scatter(_naive(flagged.index), flagged["loss"], s=12, color=FLAG_COLOR, zorder=3,
                           label="loss above threshold")
        if use_log_scale(scores["loss"]):
            bottom.set_yscale("log")
    bottom.set_ylabel("loss")

    top.set_xlim(_naive(pd.DatetimeIndex([start]))[0], _naive(pd.DatetimeIndex([stop]))[0])
    locator = mdates.AutoDateLocator(minticks=5, maxticks=10)
    # The subtitle carries the full dates, so the ticks stay short and no offset text floats in the corner.
    formatter = mdates.ConciseDateFormatter(locator, show_offset=False,
                                            formats=["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%S.%f"],
                                            zero_formats=["", "%Y", "%b", "%b %d", "%H:%M", "%H:%M"])
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(formatter)
    bottom.set_xlabel("time (UTC)")
    for axis in (top, bottom):
        _legend(axis)
    return fig


def _legend(axis) -> None:
    """Lines first, then points, then bands; room above the data so the legend covers none of it."""
    handles, labels = axis.get_legend_handles_labels()
    if not handles:
        return
    order = sorted(range(len(handles)), key=lambda i: ("Line" not in type(handles[i]).__name__,
                                                       "Collection" not in type(handles[i]).__name__))
    axis.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left", fontsize=8.5,
                framealpha=0.9, ncols=len(handles))
    low, high = axis.get_ylim()
    if axis.get_yscale() == "log":
        axis.set_ylim(low, high * (high / low) ** 0.2)
    else:
        axis.set_ylim(low, high + 0.2 * (high - low))


def save_png(fig, path: Path) -> None:
    """Write to a temporary name beside the target, then rename: a reader never sees half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(temporary, format="png", dpi=DPI, metadata={"Software": None})
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------- the run


def plot_sensor(sensor_id: str, raw: pd.Series | None, frame: pd.DataFrame | None, settings: PlotSettings) -> bool:
    """Draw and save one sensor's picture; False (logged) when there is nothing to draw."""
    field = settings.schema.field
    scores = normalize_scores(frame, field)
    empty = pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))
    readings = readings_line(raw if raw is not None else empty, settings.interval, settings.start, settings.stop,
                             settings.max_gap_points)
    range_text = f"{times.format_time(settings.start)} .. {times.format_time(settings.stop)}"
    if scores.empty and not readings.notna().any():
        logger.error("sensor %r: nothing to draw: no readings in %r and no scores in %r in %s; check the id "
                     "(tag %r) and the range", sensor_id, settings.schema.measurement,
                     settings.schema.output_measurement, range_text, settings.schema.sensor_tag)
        return False
    reason = None
    if scores.empty:
        has_model = (artifacts.sensor_dir(settings.models_dir, sensor_id) / artifacts.METADATA).exists()
        reason = no_scores_reason(has_model, settings.models_dir)
        logger.warning("sensor %r: no scores in %s: %s", sensor_id, range_text, reason)
    fig = draw(sensor_id, readings, scores, field=field, interval=settings.interval, start=settings.start,
               stop=settings.stop, no_scores=reason)
    path = settings.outputs[sensor_id]
    save_png(fig, path)
    runs = len(flag_spans(scores["anomaly"], settings.interval))
    logger.info("sensor %r: wrote %s: %d windows scored, %d flagged in %d run%s", sensor_id, path, len(scores),
                int(scores["anomaly"].sum()), runs, "" if runs == 1 else "s")
    return True


def run(settings: PlotSettings) -> int:
    began = time.monotonic()
    drawn = failed = 0
    with Influx(settings.connection, settings.schema) as db:
        for first in range(0, len(settings.sensors), settings.chunk_size):
            chunk = list(settings.sensors[first:first + settings.chunk_size])
            means = db.read_means(chunk, settings.start, settings.stop, settings.interval)
            scores = db.read_scores(chunk, settings.start, settings.stop)
            for sensor_id in chunk:
                try:
                    ok = plot_sensor(sensor_id, means.get(sensor_id), scores.get(sensor_id), settings)
                except Exception:
                    logger.exception("sensor %r: failed", sensor_id)
                    ok = False
                drawn += ok
                failed += not ok
    logger.info("done in %.1fs: %d drawn, %d not", time.monotonic() - began, drawn, failed)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        return run(settings)
    except InfluxError as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
