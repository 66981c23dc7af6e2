"""anomaly.alerts: events, their continuation across runs, notification decisions, payloads, annotation and
incident lines (tables of tiny cases checked by eye), and post() against a local HTTP receiver."""

from __future__ import annotations

import argparse
import base64
import copy
import json
import socket
import threading
import traceback
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from conftest import rows

import influx_interact
from anomaly.alerts.annotations import annotation_id, annotation_lines, chronograf_lines
from anomaly.alerts.announce import AlertSettings, add_arguments, announce, settings_from_args
from anomaly.alerts.delivery import due_notifications, mark_sent
from anomaly.alerts.events import MISSING, Event, as_scores, events, outages
from anomaly.alerts.incidents import Incident, incident_lines, incidents
from anomaly.alerts.payloads import Context, message, payload
from anomaly.alerts.resume import mark_announced, outbox_events, resume, tracked_events, unannounced, with_outbox
from anomaly.alerts.state import dump_state, load_state, new_state
from anomaly.alerts.webhook import NotifyError, post, redact_url, url_problem
from anomaly.connection import Connection
from anomaly.errors import ConfigError
from anomaly.influx.line_protocol import line_protocol
from anomaly.sensor_config import SensorConfig
from anomaly.settings import Common, Schema
from anomaly.times import format_time
from tools import local_influxd

T0 = pd.Timestamp("2026-01-01T00:00:00Z")  # 1767225600
I = pd.Timedelta("15m")  # noqa: E741 - one interval; a short name keeps the tables below readable
NOW = pd.Timestamp("2026-01-02T00:00:00Z")
HOUR = pd.Timedelta("1h")


def t(k: int) -> pd.Timestamp:
    return T0 + k * I


def scores(flags: str, first: int = 0, skip: tuple[int, ...] = (), losses=None, thresholds=None) -> pd.DataFrame:
    """Windows ending at t(first), t(first + 1), ...; ``x`` flagged, ``.`` not; ``skip`` positions never scored."""
    keep = [k for k in range(len(flags)) if k not in skip]
    loss = losses if losses is not None else [2.0 if c == "x" else 0.1 for c in flags]
    threshold = thresholds if thresholds is not None else [1.0] * len(flags)
    return pd.DataFrame(
        {
            "value": [20.0] * len(keep),
            "loss": [loss[k] for k in keep],
            "threshold": [threshold[k] for k in keep],
            "anomaly": [flags[k] == "x" for k in keep],
        },
        index=pd.DatetimeIndex([t(first + k) for k in keep]),
    )


def ev(sensor: str, start: int, end: int, ongoing: bool = False, peak: float = 2.0) -> Event:
    return Event(sensor, t(start), t(end), end - start + 1, peak, 1.0, ongoing)


def spans(found: list[Event]) -> list[tuple]:
    """(start, end, windows, ongoing, previous_end) in interval numbers, for tables."""
    k = lambda stamp: None if stamp is None else int((stamp - T0) / I)  # noqa: E731
    return [(k(e.start), k(e.end), e.windows, e.ongoing, k(e.previous_end)) for e in found]


# ---------------------------------------------------------------- events


@pytest.mark.parametrize(
    "flags, skip, expected",
    [
        pytest.param("", (), [], id="nothing scored"),
        pytest.param("....", (), [], id="nothing flagged"),
        pytest.param("xx..", (), [(0, 1, 2, False, None)], id="ended"),
        pytest.param("..xx", (), [(2, 3, 2, True, None)], id="reaches the last window: ongoing"),
        pytest.param("xxxx", (), [(0, 3, 4, True, None)], id="all flagged"),
        pytest.param("x.x", (), [(0, 0, 1, False, None), (2, 2, 1, True, None)], id="one unflagged window splits"),
        pytest.param("x..x.", (), [(0, 0, 1, False, None), (3, 3, 1, False, None)], id="two single windows"),
        pytest.param("xxxx", (2,), [(0, 1, 2, False, None), (3, 3, 1, True, None)], id="a window never scored splits"),
        pytest.param("xx.x", (2,), [(0, 1, 2, False, None), (3, 3, 1, True, None)], id="gap after the run"),
    ],
)
def test_events(flags, skip, expected):
    assert spans(events("s", scores(flags, skip=skip), I)) == expected


@pytest.mark.parametrize(
    "flags, skip, expected",
    [
        pytest.param("x.x..x...x", (), [(0, 2, 3, False, None), (5, 5, 1, False, None), (9, 9, 1, True, None)]),
        pytest.param("xx.x.", (2,), [(0, 3, 4, False, None)], id="across a window never scored"),
        pytest.param("x..x", (), [(0, 0, 1, False, None), (3, 3, 1, True, None)], id="a window apart: two"),
    ],
)
def test_flags_whose_windows_share_a_reading_are_one_event(flags, skip, expected):
    """Windows of 3 ending two intervals apart share a reading: told once leaves the window between unflagged
    when it only retells it, and the anomaly is still one event, not a flag and then another."""
    assert spans(events("s", scores(flags, skip=skip), I, window=3)) == expected


def test_event_peak_loss_and_its_threshold():
    found = events("s", scores("xxx", losses=[1.5, 3.0, 2.0], thresholds=[1.0, 1.2, 1.1]), I)
    assert [(e.sensor_id, e.peak_loss, e.threshold) for e in found] == [("s", 3.0, 1.2)]
    # the peak is the run's own: not a higher loss in the unflagged window after it (a level or a
    # persistence decision can flag a window whose loss is lower than its neighbour's)
    found = events("s", scores("xx.", losses=[1.5, 2.0, 3.0], thresholds=[1.0, 1.2, 1.1]), I)
    assert [(e.peak_loss, e.threshold) for e in found] == [(2.0, 1.2)]


def test_an_event_without_a_loss_takes_the_threshold_of_its_first_window():
    # Outages counted as anomalies (--missing-is-anomaly) have no loss at all.
    frame = points("MM.")
    frame["threshold"] = [1.0, 2.0, 3.0]
    (found,) = events("s", frame, I)
    assert np.isnan(found.peak_loss) and found.threshold == 1.0


# Without a warning: a bool fill of a float column warns, and pandas 4 will raise.
@pytest.mark.filterwarnings("error")
def test_events_sorts_and_reads_missing_flags_as_false():
    frame = scores("x.x").iloc[::-1].astype({"anomaly": object})
    frame.iloc[1, frame.columns.get_loc("anomaly")] = None
    assert spans(events("s", frame, I)) == [(0, 0, 1, False, None), (2, 2, 1, True, None)]
    assert events("s", frame, I)[0].start.tz is not None


@pytest.mark.parametrize(
    "frame, interval, error, match",
    [
        pytest.param(scores("x")["loss"], I, TypeError, "^scores must be a DataFrame, not Series$", id="a series"),
        pytest.param(
            scores("x").reset_index(drop=True), I, TypeError, r"\(DatetimeIndex\), not RangeIndex$", id="no time index"
        ),
        pytest.param(
            scores("x").tz_localize(None),
            I,
            ValueError,
            "^scores' window end times have no time zone; give them in UTC$",
            id="naive times",
        ),
        pytest.param(scores("x").drop(columns="anomaly"), I, ValueError, "anomaly", id="missing column"),
        pytest.param(
            scores("x").drop(columns=["threshold", "anomaly"]),
            I,
            ValueError,
            r"^scores lack the column\(s\) threshold, anomaly$",
            id="missing columns",
        ),
        pytest.param(
            pd.concat([scores("x"), scores("x")]),
            I,
            ValueError,
            "^scores hold the same window end twice$",
            id="duplicate window end",
        ),
        pytest.param(scores("x"), pd.Timedelta(0), ValueError, "interval", id="zero interval"),
    ],
)
def test_events_rejects(frame, interval, error, match):
    with pytest.raises(error, match=match):
        events("s", frame, interval)


# ---------------------------------------------------------------- continuation across runs


def remembered(start: int, end: int, ongoing: bool = True) -> dict:
    _, state = resume([ev("s", start, end, ongoing)], new_state(), I)
    return state


@pytest.mark.parametrize(
    "tracked, flags, first, expected, newest",
    [
        pytest.param(None, "..xx", 0, [(2, 3, 2, True, None)], (2, 3), id="nothing remembered"),
        pytest.param((2, 3), "xx..", 4, [(2, 5, 4, False, 3)], (2, 5), id="next run extends the ongoing event"),
        pytest.param((2, 3), "x...", 4, [(2, 4, 3, False, 3)], (2, 4), id="one more window"),
        pytest.param((2, 3), ".x..", 4, [(5, 5, 1, False, None)], (5, 5), id="one clear window between: new event"),
        pytest.param((2, 3), "x", 6, [(6, 6, 1, True, None)], (6, 6), id="intervals never scored between: new event"),
        pytest.param(
            (2, 3), "x.x", 4, [(2, 4, 3, False, 3), (6, 6, 1, True, None)], (6, 6), id="extended, then another"
        ),
        pytest.param((2, 5), "xxxx", 0, [(0, 5, 6, True, None)], (0, 5), id="backfill overlapping: one event"),
    ],
)
def test_resume(tracked, flags, first, expected, newest):
    state = remembered(*tracked) if tracked else new_state()
    before = copy.deepcopy(state)
    found, new = resume(events("s", scores(flags, first=first), I), state, I)
    assert spans(found) == expected
    assert state == before
    assert spans(tracked_events(new))[0][:2] == newest


@pytest.mark.parametrize(
    "flags, expected",
    [
        pytest.param(".x..", [(2, 5, 4, False, 3)], id="two intervals after its end: the same event"),
        pytest.param("..x.", [(6, 6, 1, False, None)], id="three after: a new one"),
    ],
)
def test_resume_joins_the_next_runs_flags_whose_windows_share_a_reading(flags, expected):
    found, _ = resume(events("s", scores(flags, first=4), I, 3), remembered(2, 3), I, windows={"s": 3})
    assert spans(found) == expected


@pytest.mark.parametrize(
    "last_scored, ongoing",
    [
        pytest.param(None, True, id="not told what was scored: still ongoing"),
        pytest.param(7, False, id="scored past its end without continuing it: ended"),
        pytest.param(3, True, id="scored only up to its end (a backfill): still ongoing"),
    ],
)
def test_resume_learns_that_a_remembered_event_ended(last_scored, ongoing):
    scored = None if last_scored is None else {"s": t(last_scored), "quiet": t(last_scored)}
    found, state = resume(events("s", scores("....", first=4), I), remembered(2, 3), I, scored)
    assert found == [] and sorted(state["sensors"]) == ["s"]
    assert spans(tracked_events(state)) == [(2, 3, 2, ongoing, None)]


def test_resume_keeps_other_sensors_and_tracked_events_filters_by_end():
    state = remembered(2, 3)
    _, state = resume([ev("u", 8, 9)], state, I)
    assert [e.sensor_id for e in tracked_events(state)] == ["s", "u"]
    assert [e.sensor_id for e in tracked_events(state, since=t(4))] == ["u"]
    assert [e.sensor_id for e in tracked_events(state, since=t(3))] == ["s", "u"]  # ending at since: kept
    assert tracked_events({}) == []


def test_resume_returns_the_events_of_every_sensor_of_the_run():
    found, state = resume([ev("a", 0, 1), ev("b", 2, 3), ev("a", 5, 5, ongoing=True)], remembered(2, 3), I)
    assert [(e.sensor_id, e.start) for e in found] == [("a", t(0)), ("a", t(5)), ("b", t(2))]
    assert sorted(state["sensors"]) == ["a", "b", "s"]


@pytest.mark.parametrize(
    "remembered_peak, new_peak, expected",
    [(2.0, 5.0, 5.0), (5.0, 2.0, 5.0), (float("nan"), 2.0, 2.0), (2.0, float("nan"), 2.0)],
)
def test_a_continued_event_keeps_the_larger_peak_of_its_pieces(remembered_peak, new_peak, expected):
    _, state = resume([ev("s", 2, 3, ongoing=True, peak=remembered_peak)], new_state(), I)
    (found,) = resume([ev("s", 4, 5, peak=new_peak)], state, I)[0]
    assert found.peak_loss == expected and spans([found]) == [(2, 5, 4, False, 3)]


def test_the_newest_piece_says_whether_an_event_goes_on():
    # A backfill that rescored the remembered event's windows and the one after it: at the same end, this
    # run's piece (not ongoing: the window after it was scored) wins over the remembered one (ongoing).
    found, _ = resume(events("s", scores("xx.", first=2), I), remembered(2, 3), I)
    assert spans(found) == [(2, 3, 2, False, None)]


def test_unannounced_is_what_a_run_that_died_wrote_without_making_its_events():
    state = mark_announced(new_state(), {"died": t(3), "kept up": t(9), "long ago": t(1)})
    state["sensors"]["never announced"] = {}
    first = {s: t(10) for s in ("new", "never announced", "died", "kept up", "long ago")}
    assert unannounced(state, first, I, since=t(0)) == {"died": (t(4), t(10)), "long ago": (t(2), t(10))}
    # reaching back no further than ``since``
    assert unannounced(state, first, I, since=t(6)) == {"died": (t(6), t(10)), "long ago": (t(6), t(10))}
    assert unannounced(state, {"died": t(4)}, I, since=t(0)) == {}  # nothing between
    assert unannounced({}, first, I, since=t(0)) == {}


def test_mark_announced_moves_forward_only_and_keeps_the_rest_of_the_entry():
    state = remembered(2, 3)
    marked = mark_announced(state, {"s": t(5), "new": t(7)})
    assert "announced" not in state["sensors"]["s"]  # the given state is not changed
    assert marked["sensors"]["s"]["announced"] == "2026-01-01T01:15:00Z"
    assert marked["sensors"]["s"]["event"] == state["sensors"]["s"]["event"]
    assert marked["sensors"]["new"] == {"announced": "2026-01-01T01:45:00Z"}
    assert mark_announced(marked, {"s": t(4)})["sensors"]["s"]["announced"] == "2026-01-01T01:15:00Z"  # a backfill
    assert mark_announced(marked, {"s": t(6)})["sensors"]["s"]["announced"] == "2026-01-01T01:30:00Z"


def test_the_outbox_holds_exactly_the_events_waiting_for_their_message():
    waiting = [ev("b", 4, 5), ev("a", 0, 1), ev("a", 6, 6, ongoing=True, peak=3.0)]
    state = with_outbox(remembered(2, 3), waiting)
    assert outbox_events(state) == [waiting[1], waiting[2], waiting[0]]  # by sensor, then as given
    assert state["sensors"]["s"]["event"] == remembered(2, 3)["sensors"]["s"]["event"]
    assert outbox_events(remembered(2, 3)) == [] and outbox_events({}) == []
    emptied = with_outbox(state, [waiting[0]])
    assert outbox_events(emptied) == [waiting[0]] and outbox_events(state) == outbox_events(with_outbox(state, waiting))
    assert emptied["sensors"]["a"] == {} and "event" in emptied["sensors"]["s"]


# ---------------------------------------------------------------- notification decisions


def run(found, state, now=NOW, cooldown=HOUR, max_age=None, send_ok=True):
    """One run as the caller does it: decide, send (or fail), mark, save and load the state again."""
    due, state = due_notifications(found, state, cooldown, now, max_age)
    if send_ok:
        state = mark_sent(state, due, now)
    loaded, problem = load_state(dump_state(state))
    assert problem is None
    return due, loaded


def test_a_new_event_is_sent_once_across_runs():
    due, state = run([ev("a", 0, 1)], new_state())
    assert due == [ev("a", 0, 1)]
    assert run([ev("a", 0, 1)], state, now=NOW + 2 * HOUR)[0] == []


def test_an_extended_ongoing_event_is_not_sent_again():
    found, state = resume(events("a", scores("..xx"), I), new_state(), I)
    due, state = run(found, state)
    assert spans(due) == [(2, 3, 2, True, None)]
    found, state = resume(events("a", scores("xxx.", first=4), I), state, I)
    assert spans(found) == [(2, 6, 5, False, 3)]
    assert run(found, state, now=NOW + 2 * HOUR)[0] == []


def test_cooldown_suppresses_and_the_suppressed_event_is_never_sent_later():
    _, state = run([ev("a", 0, 1)], new_state(), now=t(2))
    due, state = run([ev("a", 3, 4, ongoing=True)], state, now=t(5))  # starts 30 min after the sent one ended
    assert due == []
    due, state = run([ev("a", 3, 20)], state, now=t(21))  # it goes on past the cooldown: still never sent
    assert due == []
    assert run([ev("a", 30, 31)], state, now=t(32))[0] == [ev("a", 30, 31)]


def test_the_cooldown_runs_in_event_time_so_a_catch_up_does_not_mute_the_next_event():
    """A catch-up sends an old event; the next event, an hour and more after it in event time, is sent
    although the catch-up's message went out minutes ago."""
    _, state = run([ev("a", 0, 1)], new_state(), now=t(40))
    assert run([ev("a", 41, 42)], state, now=t(43))[0] == [ev("a", 41, 42)]
    _, state = run([ev("b", 38, 39)], new_state(), now=t(40))
    assert run([ev("b", 41, 42)], state, now=t(43))[0] == []


@pytest.mark.parametrize(
    "cooldown, expected",
    [
        pytest.param(pd.Timedelta(0), [ev("a", 0, 0), ev("a", 5, 5)], id="no cooldown: every new event"),
        pytest.param(HOUR, [ev("a", 5, 5)], id="cooldown: the newest only"),
    ],
)
def test_several_new_events_of_one_sensor_in_one_run(cooldown, expected):
    due, state = run([ev("a", 5, 5), ev("a", 0, 0)], new_state(), cooldown=cooldown)
    assert due == expected
    assert run([ev("a", 0, 0), ev("a", 5, 5)], state, now=NOW + 3 * HOUR, cooldown=cooldown)[0] == []


def test_one_event_passed_twice_is_one_message():
    due, _ = due_notifications([ev("a", 0, 1, ongoing=True), ev("a", 0, 3)], new_state(), pd.Timedelta(0), NOW)
    assert due == [ev("a", 0, 3)]


def test_cooldown_is_per_sensor():
    _, state = run([ev("a", 0, 1)], new_state(), now=t(2))
    assert run([ev("a", 3, 3), ev("b", 3, 3)], state, now=t(4))[0] == [ev("b", 3, 3)]


def test_a_failed_send_is_tried_again_next_run_from_the_tracked_event():
    found, state = resume([ev("a", 0, 1)], new_state(), I)
    due, state = run(found, state, send_ok=False)
    assert due == [ev("a", 0, 1)]
    found, state = resume([], state, I)
    due, state = run(found + tracked_events(state), state, now=NOW + pd.Timedelta("5m"))
    assert spans(due) == [(0, 1, 2, False, None)]
    assert run(tracked_events(state), state, now=NOW + 3 * HOUR)[0] == []


def test_max_age_records_old_events_without_sending_them():
    old = Event("a", NOW - pd.Timedelta(days=3), NOW - pd.Timedelta(days=2), 97, 2.0, 1.0, False)
    due, state = run([old], new_state(), max_age=pd.Timedelta(days=1))
    assert due == []
    assert run([old], state, now=NOW + HOUR)[0] == []
    (old_incident,) = incidents([replace(old, sensor_id="b")], GROUPS, I)
    due, state = run([old_incident], state, max_age=pd.Timedelta(days=1))
    assert due == [] and run([replace(old, sensor_id="b")], state, now=NOW + HOUR)[0] == []


def test_max_age_is_inclusive_and_recent_events_are_sent():
    age = pd.Timedelta(days=1)
    boundary = Event("a", NOW - age - HOUR, NOW - age, 5, 2.0, 1.0, False)  # ended exactly max-age ago
    recent = Event("b", NOW - HOUR, NOW - I, 4, 2.0, 1.0, False)
    due, state = due_notifications([boundary, recent], new_state(), HOUR, NOW, age)
    assert due == [boundary, recent]
    assert state["sensors"]["a"] == {} and state["sensors"]["b"] == {}  # to send: not recorded yet


def test_the_cooldown_ends_exactly_a_cooldown_after_the_end_of_the_last_sent_event():
    _, state = run([ev("a", 0, 1)], new_state(), now=t(2))
    assert run([ev("a", 5, 5)], state, now=t(6))[0] == [ev("a", 5, 5)]  # starts 1 h after t(1)


def test_a_state_written_before_the_cooldown_ran_in_event_time_counts_it_from_the_message():
    legacy = {"format": 1, "sensors": {"a": {"decided": format_time(t(0)), "notified_at": format_time(t(4))}}}
    assert due_notifications([ev("a", 6, 6)], legacy, HOUR, t(7))[0] == []  # 30 min after the message
    assert due_notifications([ev("a", 8, 8)], legacy, HOUR, t(9))[0] == [ev("a", 8, 8)]


def test_every_sensor_with_a_new_event_gets_its_message_in_the_same_run():
    assert run([ev("a", 0, 1), ev("b", 2, 3), ev("c", 4, 4)], new_state())[0] == [
        ev("a", 0, 1),
        ev("b", 2, 3),
        ev("c", 4, 4),
    ]


def test_an_older_event_sent_late_moves_neither_the_decision_nor_the_cooldown_back():
    # The outbox: an older event whose message failed goes through after a newer one was sent.
    state = mark_sent(new_state(), [ev("a", 10, 11)], t(12))  # a sensor the state has not seen yet
    state = mark_sent(state, [ev("a", 0, 1)], t(13))
    entry = state["sensors"]["a"]
    assert entry["decided"] == format_time(t(10)) and entry["notified_end"] == format_time(t(11))
    assert entry["notified_at"] == format_time(t(13))  # the time of the last message, whatever it was about
    # an event between them is not new, and one within the cooldown of t(11) is held
    assert due_notifications([ev("a", 5, 6)], state, pd.Timedelta(0), t(14))[0] == []
    assert due_notifications([ev("a", 13, 13)], state, HOUR, t(14))[0] == []


def test_marking_the_same_item_sent_twice_changes_nothing_but_the_message_time():
    once = mark_sent(new_state(), [ev("a", 0, 1), incident("critical")], NOW)
    twice = mark_sent(once, [ev("a", 0, 1), incident("minor")], NOW + HOUR)  # and a copy of lower severity
    for kind, name in (("sensors", "a"), ("groups", "B1")):
        assert {k: v for k, v in twice[kind][name].items() if k != "notified_at"} == {
            k: v for k, v in once[kind][name].items() if k != "notified_at"
        }
    assert twice["groups"]["B1"]["severity"] == "critical"


def test_an_escalation_is_old_news_only_when_it_ended_before_max_age():
    age = pd.Timedelta(days=1)
    _, state = run([incident("minor")], new_state(), now=t(5))
    for now in (t(4) + age, t(4) + HOUR):  # ended exactly max-age ago, or recently
        assert due_notifications([incident("critical")], state, HOUR, now, age)[0] == [incident("critical")]
    assert due_notifications([incident("critical")], state, HOUR, t(4) + 2 * age, age)[0] == []


def test_an_incident_of_the_same_severity_is_not_sent_again():
    _, state = run([incident("minor")], new_state())
    assert run([incident("minor", end=6)], state, now=NOW + 3 * HOUR)[0] == []


def test_events_and_groups_of_the_same_name_in_one_run_are_two_messages():
    found = [ev("B1", 0, 4), incident("minor")]  # a sensor named like a group, same start
    assert run(found, new_state())[0] == found


def test_old_incidents_of_several_groups_all_silence_their_events():
    age = pd.Timedelta(days=1)
    old = [Incident(g, t(0), t(4), (s,), 5, "minor", False, ((s, t(0)),)) for g, s in (("B1", "a"), ("B2", "x"))]
    _, state = run(old, new_state(), now=t(4) + 2 * age, max_age=age)
    assert run([ev("a", 0, 4), ev("x", 0, 4)], state, now=t(4) + 2 * age + HOUR)[0] == []


def incident(severity: str, sensors=("a",), start: int = 0, end: int = 4) -> Incident:
    return Incident("B1", t(start), t(end), tuple(sensors), 5, severity, True)


def test_an_incident_is_sent_again_only_when_its_severity_rises():
    due, state = run([incident("minor")], new_state())
    assert due == [incident("minor")]
    soon = NOW + pd.Timedelta("5m")
    due, state = run([incident("critical", ("a", "b", "c"), end=6)], state, now=soon)
    assert due == [incident("critical", ("a", "b", "c"), end=6)], "escalation is sent whatever the cooldown"
    assert run([incident("major", ("a", "b"), end=8)], state, now=soon)[0] == []
    assert run([incident("critical", ("a", "b", "c"), end=9)], state, now=NOW + 3 * HOUR)[0] == []


@pytest.mark.parametrize("sent", [True, False], ids=["incident sent", "incident suppressed by the cooldown"])
def test_events_announced_by_an_incident_are_not_announced_again_without_their_group(sent):
    start, end = (-10, -8) if sent else (-3, -1)  # ends 2 h, or 15 min, before the next incident starts
    _, state = run([incident("minor", start=start, end=end)], new_state(), now=t(end + 1))
    found = incidents([ev("a", 0, 2), ev("b", 1, 3)], GROUPS, I)
    due, state = run(found, state, now=t(4))
    assert due == (found if sent else [])
    assert run([ev("a", 0, 2), ev("b", 1, 3), ev("c", 1, 3)], state, now=t(4) + 3 * HOUR)[0] == [ev("c", 1, 3)]


def test_the_same_events_grouped_anew_are_not_sent_again():
    # One run knows two events of a and one of b, chained into one incident; the next knows only each sensor's
    # newest (as the state keeps them), which chain otherwise: new incident keys, the same news.
    first = incidents([ev("a", 0, 2), ev("b", 3, 5), ev("a", 6, 8)], GROUPS, I)
    due, state = run(first, new_state(), now=t(9), cooldown=pd.Timedelta(0))
    assert due == first and len(first) == 1
    regrouped = incidents([ev("b", 3, 5), ev("a", 6, 8)], GROUPS, pd.Timedelta(0))
    assert len(regrouped) == 2 and regrouped[0].start > first[0].start
    assert run(regrouped, state, now=t(10), cooldown=pd.Timedelta(0))[0] == []
    # A new event beside them is news.
    later = incidents([ev("b", 3, 5), ev("a", 6, 8), ev("c", 12, 13)], GROUPS, pd.Timedelta(0))
    assert run(later, state, now=t(14), cooldown=pd.Timedelta(0))[0] == [later[-1]] and later[-1].sensors == ("c",)


def test_groups_and_sensors_of_the_same_name_do_not_share_state():
    _, state = run([incident("minor")], new_state())
    assert run([ev("B1", 0, 4)], state, now=NOW + pd.Timedelta("1m"))[0] == [ev("B1", 0, 4)]


def test_due_notifications_does_not_change_its_input_and_rejects_bad_arguments():
    state = run([ev("a", 0, 1)], new_state())[1]
    before = copy.deepcopy(state)
    due_notifications([ev("a", 5, 6)], state, HOUR, NOW + 3 * HOUR)
    mark_sent(state, [ev("a", 5, 6)], NOW)
    assert state == before
    with pytest.raises(ValueError, match="cooldown"):
        due_notifications([], state, -HOUR, NOW)
    with pytest.raises(ValueError, match=r"^now has no time zone; give it in UTC$"):
        due_notifications([], state, HOUR, NOW.tz_localize(None))
    with pytest.raises(TypeError, match="Event or an Incident"):
        due_notifications(["a"], state, HOUR, NOW)


GOOD = {
    "format": 1,
    "sensors": {"b": {"decided": "2026-01-01T00:00:00Z", "notified_at": "2026-01-02T00:00:00Z"}},
    "groups": {},
}


@pytest.mark.parametrize(
    "text, problem, kept",
    [
        pytest.param(None, None, [], id="no file yet"),
        pytest.param(json.dumps(GOOD), None, ["b"], id="good"),
        pytest.param("", "empty", [], id="empty"),
        pytest.param(" \n", "empty", [], id="blank"),
        pytest.param('{"format": 1, "sensors": {', "not valid JSON at line 1", [], id="truncated"),
        pytest.param("[]", "not format 1", [], id="a list"),
        pytest.param('{"format": 2, "sensors": {}}', "not format 1", [], id="another format"),
        pytest.param(
            json.dumps({**GOOD, "sensors": {**GOOD["sensors"], "a": {"decided": "yesterday"}}}),
            "1 unreadable entry",
            ["b"],
            id="one bad time",
        ),
        pytest.param(
            json.dumps(
                {**GOOD, "sensors": {**GOOD["sensors"], "a": {"event": {"start": "2026-01-01T00:00:00Z"}}, "c": []}}
            ),
            "2 unreadable entries",
            ["b"],
            id="bad event and bad entry",
        ),
        pytest.param(
            json.dumps({**GOOD, "groups": {"g": {"severity": "apocalyptic"}}}),
            "1 unreadable",
            ["b"],
            id="unknown severity",
        ),
    ],
)
def test_load_state_tolerates_bad_files(text, problem, kept):
    state, found = load_state(text)
    assert (found is None) == (problem is None)
    if problem:
        assert problem in found
    assert sorted(state["sensors"]) == kept
    assert json.loads(dump_state(state))["format"] == 1


def test_a_corrupt_state_starts_fresh_and_sends():
    state, problem = load_state('{"format": 1, "sens')
    assert problem and due_notifications([ev("a", 0, 1)], state, HOUR, NOW)[0] == [ev("a", 0, 1)]


def test_state_round_trips_with_a_non_finite_loss():
    _, state = resume([Event("a", t(0), t(0), 1, float("nan"), 1.0, True)], new_state(), I)
    loaded, problem = load_state(dump_state(state))
    assert problem is None and loaded == state
    assert np.isnan(tracked_events(loaded)[0].peak_loss)


# ---------------------------------------------------------------- payloads


EVENT = Event("AHU 2", t(0), t(2), 3, 2.5, 0.5, False)
INCIDENT = Incident("Boiler 1", t(0), t(3), ("a", "b"), 5, "major", True)


def test_message_text():
    assert message(EVENT) == (
        "Anomaly on 'AHU 2': 3 windows, 2026-01-01 00:00 to 00:30 UTC, peak loss 2.5 > threshold 0.5"
    )
    assert message(INCIDENT, Context(group_tag="equipRef")) == (
        "Major incident on equipRef 'Boiler 1': 2 of 5 sensors, 2026-01-01 00:00 to 00:45 UTC, ongoing: 'a', 'b'"
    )


def test_json_payload():
    body = payload(EVENT, "json", Context(measurement="SCORES"))
    assert body == {
        "kind": "event",
        "sensor_id": "AHU 2",
        "sensor_tag": "uniqueID",
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:30:00Z",
        "windows": 3,
        "peak_loss": 2.5,
        "threshold": 0.5,
        "ongoing": False,
        "measurement": "SCORES",
        "message": message(EVENT),
        "link": None,
    }
    body = payload(INCIDENT, "json")
    assert body["kind"] == "incident" and body["sensors"] == ["a", "b"] and body["severity"] == "major"
    assert body["count"] == 2 and body["measurement"] == "INCIDENTS"
    nan_loss = payload(Event("s", t(0), t(0), 1, float("nan"), 1.0, True), "json")
    assert json.loads(json.dumps(nan_loss, allow_nan=False))["peak_loss"] is None


@pytest.mark.parametrize("item", [EVENT, INCIDENT], ids=["event", "incident"])
def test_slack_payload_shape(item):
    body = payload(item, "slack", Context(link="https://grafana.example/d/x?a=1&b=2"))
    assert set(body) == {"text", "blocks"} and body["text"]
    header, section = body["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "<https://grafana.example/d/x?a=1&amp;b=2|Open dashboard>" in section["text"]["text"]
    json.dumps(body, allow_nan=False)


def test_slack_escapes_markup_and_respects_limits():
    body = payload(Event("<!channel> & " + "x" * 4000, t(0), t(0), 1, 2.0, 1.0, True), "slack")
    assert "<!channel>" not in body["text"] + body["blocks"][1]["text"]["text"]
    assert body["text"].startswith("Anomaly on '&lt;!channel&gt; &amp; xxx")
    assert len(body["blocks"][0]["text"]["text"]) <= 150 and len(body["blocks"][1]["text"]["text"]) <= 3000


@pytest.mark.parametrize("item", [EVENT, INCIDENT], ids=["event", "incident"])
@pytest.mark.parametrize("link", [None, "https://chronograf.example/sources/1/dashboards/2"])
def test_teams_payload_is_an_adaptive_card_envelope(item, link):
    body = payload(item, "teams", Context(link=link))
    assert body["type"] == "message" and len(body["attachments"]) == 1
    attachment = body["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.2"
    assert [block["type"] for block in card["body"]] == ["TextBlock", "TextBlock", "FactSet"]
    assert all(set(fact) == {"title", "value"} for fact in card["body"][2]["facts"])
    expected = [{"type": "Action.OpenUrl", "title": "Open dashboard", "url": link}] if link else []
    assert card.get("actions", []) == expected


def test_payload_rejects_unknown_style_and_items():
    with pytest.raises(ValueError, match="style 'discord'"):
        payload(EVENT, "discord")
    with pytest.raises(TypeError, match="Event or an Incident"):
        payload({"sensor_id": "a"}, "json")


# ---------------------------------------------------------------- annotation and incident lines


def test_annotation_lines():
    assert annotation_lines([EVENT], "uniqueID") == [
        "ANOMALY_EVENTS,uniqueID=AHU\\ 2 text=\"anomaly on 'AHU 2': 3 windows, 2026-01-01 00:00 to 00:30 UTC, "
        'peak loss 2.5 > threshold 0.5",end_ms=1767227400000.0,windows=3.0,peak_loss=2.5,threshold=0.5,'
        'ongoing=false,kind="anomaly" 1767225600'
    ]


def test_annotation_lines_of_a_grown_event_keep_its_key():
    (first,) = annotation_lines([ev("s", 0, 1, ongoing=True)], "uniqueID")
    (later,) = annotation_lines([ev("s", 0, 5)], "uniqueID")
    assert first.split(" ")[0] == later.split(" ")[0] and first.rsplit(" ", 1)[1] == later.rsplit(" ", 1)[1]
    assert first != later


CHRONOGRAF_ID = "8ccfbe53-d683-518b-a85d-f85daf860260"


def test_chronograf_lines():
    now = pd.Timestamp("2026-01-01T01:00:00.5Z")
    assert chronograf_lines([EVENT], "uniqueID", now) == [
        f"annotations,id={CHRONOGRAF_ID},uniqueID=AHU\\ 2 deleted=false,text=\"anomaly on 'AHU 2': 3 windows, "
        f'2026-01-01 00:00 to 00:30 UTC, peak loss 2.5 > threshold 0.5",start_time=1767225600000000000i,'
        f"modified_time_ns=1767229200500000000i 1767227400"
    ]
    moved = Event(EVENT.sensor_id, EVENT.start, EVENT.end, 3, 2.5, 0.5, False, previous_end=t(1))
    assert chronograf_lines([moved], "uniqueID", now)[1] == (
        f'annotations,id={CHRONOGRAF_ID},uniqueID=AHU\\ 2 deleted=true,text="",start_time=0i,'
        f"modified_time_ns=1767229200500000000i 1767226500"
    )


def test_chronograf_id_depends_on_the_key_only():
    assert annotation_id(EVENT) == CHRONOGRAF_ID
    assert annotation_id(Event("AHU 2", t(0), t(9), 10, 9.0, 1.0, True)) == CHRONOGRAF_ID
    assert annotation_id(Event("AHU 2", t(1), t(2), 2, 2.5, 0.5, False)) != CHRONOGRAF_ID


@pytest.mark.parametrize("tag", ["id", "text", "type", "start_time", "deleted"])
def test_chronograf_lines_refuse_a_sensor_tag_chronograf_reserves(tag):
    with pytest.raises(ValueError, match="clashes"):
        chronograf_lines([EVENT], tag, NOW)


GROUPS = {"a": "B1", "b": "B1", "c": "B1", "d": "B1", "e": "B1", "x": "B2", "y": ""}


def brief(found: list[Incident]) -> list[tuple]:
    return [(i.group, i.sensors, int((i.start - T0) / I), int((i.end - T0) / I), i.severity) for i in found]


@pytest.mark.parametrize(
    "found, window, options, expected",
    [
        pytest.param([], I, {}, [], id="no events"),
        pytest.param([ev("a", 0, 2)], I, {}, [("B1", ("a",), 0, 2, "minor")], id="one sensor: minor"),
        pytest.param([ev("a", 0, 2), ev("b", 1, 3)], I, {}, [("B1", ("a", "b"), 0, 3, "major")], id="2 of 5: major"),
        pytest.param(
            [ev("a", 0, 2), ev("b", 1, 3), ev("c", 3, 4)],
            I,
            {},
            [("B1", ("a", "b", "c"), 0, 4, "critical")],
            id="3 of 5: half or more, critical",
        ),
        pytest.param(
            [ev("a", 0, 2), ev("b", 1, 3)],
            I,
            {"critical_count": 2},
            [("B1", ("a", "b"), 0, 3, "critical")],
            id="critical_count reached",
        ),
        pytest.param(
            [ev("a", 0, 1), ev("b", 4, 5)],
            HOUR,
            {},
            [("B1", ("a", "b"), 0, 5, "major")],
            id="45 minutes apart, window 1h: together",
        ),
        pytest.param(
            [ev("a", 0, 1), ev("b", 4, 5)],
            2 * I,
            {},
            [("B1", ("a",), 0, 1, "minor"), ("B1", ("b",), 4, 5, "minor")],
            id="45 minutes apart, window 30m: apart",
        ),
        pytest.param(
            [ev("a", 0, 1), ev("b", 3, 4), ev("c", 6, 7)],
            2 * I,
            {},
            [("B1", ("a", "b", "c"), 0, 7, "critical")],
            id="chained through the middle one",
        ),
        pytest.param(
            [ev("a", 0, 1), ev("a", 2, 3)], I, {}, [("B1", ("a",), 0, 3, "minor")], id="one sensor twice: minor"
        ),
        pytest.param(
            [ev("a", 0, 1), ev("a", 0, 3), ev("b", 3, 3)],
            pd.Timedelta(0),
            {},
            [("B1", ("a", "b"), 0, 3, "major")],
            id="same key twice: the longer one",
        ),
        pytest.param([ev("x", 0, 1)], I, {}, [("B2", ("x",), 0, 1, "minor")], id="whole group of one: minor"),
        pytest.param([ev("y", 0, 1), ev("z", 0, 1)], I, {}, [], id="no group or empty group: left out"),
        pytest.param(
            [ev("x", 0, 1), ev("a", 0, 1)],
            I,
            {},
            [("B1", ("a",), 0, 1, "minor"), ("B2", ("x",), 0, 1, "minor")],
            id="groups apart, sorted",
        ),
    ],
)
def test_incidents(found, window, options, expected):
    assert brief(incidents(found, GROUPS, window, **options)) == expected


def test_incident_takes_the_latest_copy_of_an_event():
    remembered_copy, this_run = ev("a", 0, 1, ongoing=True), ev("a", 0, 3, ongoing=False)
    (found,) = incidents([this_run, remembered_copy, ev("b", 2, 2)], GROUPS, I)
    assert not found.ongoing


def test_incident_ongoing_size_and_bad_arguments():
    (found,) = incidents([ev("a", 0, 1), ev("b", 1, 2, ongoing=True)], GROUPS, I)
    assert found.ongoing and found.group_size == 5 and found.count == 2
    assert found.members == (("a", t(0)), ("b", t(1)))
    for options, match in [
        ({"window": -I}, "window"),
        ({"window": I, "critical_share": 0}, "critical_share"),
        ({"window": I, "critical_count": 1}, "critical_count"),
    ]:
        with pytest.raises(ValueError, match=match):
            incidents([], GROUPS, **options)


def test_incident_lines():
    found = Incident("B1", t(0), t(3), ("a", "b"), 5, "major", False)
    assert incident_lines([found], "equipRef") == [
        "INCIDENTS,equipRef=B1 text=\"major incident on equipRef 'B1': 2 of 5 sensors, 2026-01-01 00:00 to 00:45 UTC: "
        '\'a\', \'b\'",severity="major",sensors="[\\"a\\", \\"b\\"]",count=2.0,group_size=5.0,'
        "end_ms=1767228300000.0,ongoing=false 1767225600"
    ]


# ---------------------------------------------------------------- outages


def points(text: str, first: int = 0, skip: tuple[int, ...] = ()) -> pd.DataFrame:
    """Scores as the scorer decides them, at t(first), t(first + 1), ...: ``x`` a flagged window, ``.`` a window
    not flagged, ``m`` an interval without readings (kind missing, no loss, anomaly=false), ``M`` one counted
    as an anomaly (--missing-is-anomaly); ``skip`` positions never written."""
    keep = [k for k in range(len(text)) if k not in skip]
    silent = [text[k] in "mM" for k in keep]
    return pd.DataFrame(
        {
            "value": [np.nan if m else 20.0 for m in silent],
            "loss": [np.nan if m else (2.0 if text[k] == "x" else 0.1) for k, m in zip(keep, silent)],
            "threshold": [1.0] * len(keep),
            "anomaly": [text[k] in "xM" for k in keep],
            "kind": [{"x": "shape", ".": "none"}.get(text[k], MISSING) for k in keep],
        },
        index=pd.DatetimeIndex([t(first + k) for k in keep]),
    )


@pytest.mark.parametrize(
    "text, skip, expected_outages, expected_events",
    [
        pytest.param("", (), [], [], id="nothing written"),
        pytest.param("..x.", (), [], [(2, 2, 1, False, None)], id="no outage"),
        pytest.param("..mmm.", (), [(2, 4, 3, False, None)], [], id="an outage, then readings"),
        pytest.param("..mm", (), [(2, 3, 2, True, None)], [], id="reaches the last point: ongoing"),
        pytest.param(
            "mmxxm", (), [(0, 1, 2, False, None), (4, 4, 1, True, None)], [(2, 3, 2, False, None)], id="apart"
        ),
        pytest.param("mmmm", (2,), [(0, 1, 2, False, None), (3, 3, 1, True, None)], [], id="an unwritten point splits"),
        pytest.param("xMMx", (), [], [(0, 3, 4, True, None)], id="missing as anomaly: an anomaly event"),
    ],
)
def test_outages_are_runs_of_missing_points_that_are_not_anomalies(text, skip, expected_outages, expected_events):
    frame = points(text, skip=skip)
    found = outages("s", frame, I)
    assert spans(found) == expected_outages
    assert all(e.kind == MISSING and np.isnan(e.peak_loss) and np.isnan(e.threshold) for e in found)
    assert spans(events("s", frame, I)) == expected_events
    assert all(e.kind == "anomaly" for e in events("s", frame, I))


def test_outages_need_the_kind_column():
    with pytest.raises(ValueError, match="kind"):
        outages("s", points("mm").drop(columns="kind"), I)


def test_an_outage_over_several_runs_stays_one_outage_remembered_apart_from_the_anomalies():
    first = points("x.mm")
    found, state = resume(events("s", first, I), new_state(), I, {"s": t(3)})
    silent, state = resume(outages("s", first, I), state, I, {"s": t(3)}, kind=MISSING)
    assert spans(found) == [(0, 0, 1, False, None)] and spans(silent) == [(2, 3, 2, True, None)]
    state, problem = load_state(dump_state(state))  # the next run reads the file
    assert problem is None and set(state["sensors"]["s"]) == {"event", "outage"}
    second = points("mmm..x", first=4)
    found, state = resume(events("s", second, I), state, I, {"s": t(9)})
    silent, state = resume(outages("s", second, I), state, I, {"s": t(9)}, kind=MISSING)
    assert spans(silent) == [(2, 6, 5, False, 3)] and silent[0].kind == MISSING  # the same start: the same key
    assert spans(found) == [(9, 9, 1, True, None)]  # not joined to the outage before it
    assert spans(tracked_events(state)) == [(9, 9, 1, True, None)]
    assert spans(tracked_events(state, kind=MISSING)) == [(2, 6, 5, False, None)]
    assert tracked_events(state, kind=MISSING)[0].kind == MISSING
    # a third run with readings only: the outage is remembered as ended, no new outage
    silent, state = resume(outages("s", points("....", first=10), I), state, I, {"s": t(13)}, kind=MISSING)
    assert silent == [] and spans(tracked_events(state, kind=MISSING)) == [(2, 6, 5, False, None)]


def test_resume_joins_one_kind_at_a_time():
    (outage,) = outages("s", points("mm"), I)
    with pytest.raises(ValueError, match="one kind"):
        resume([outage], new_state(), I)
    with pytest.raises(ValueError, match=r"^kind must be one of anomaly, missing, not 'flatline'$"):
        resume([], new_state(), I, kind="flatline")


def test_an_unreadable_outage_is_dropped_and_the_rest_of_the_entry_too():
    good = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:15:00Z", "windows": 2}
    text = json.dumps(
        {
            "format": 1,
            "sensors": {
                "a": {"outage": {**good, "peak_loss": None, "threshold": None, "ongoing": True}},
                "b": {"outage": {**good, "ongoing": "yes"}},
            },
            "groups": {},
        }
    )
    state, problem = load_state(text)
    assert problem and "1 unreadable entry" in problem and sorted(state["sensors"]) == ["a"]
    assert spans(tracked_events(state, kind=MISSING)) == [(0, 1, 2, True, None)] and tracked_events(state) == []


def test_annotation_line_of_an_outage():
    (outage,) = outages("AHU 2", points("mmm."), I)
    assert annotation_lines([outage], "uniqueID") == [
        "ANOMALY_EVENTS,uniqueID=AHU\\ 2 text=\"no readings from 'AHU 2': 3 intervals, 2026-01-01 00:00 to 00:30 UTC\","
        'end_ms=1767227400000.0,windows=3.0,ongoing=false,kind="missing" 1767225600'
    ]


# ---------------------------------------------------------------- post


SECRET_PATH = "/services/T0001/B0002/s3cretT0ken"
SECRET_QUERY = "sig=hunter2"


class Receiver(BaseHTTPRequestHandler):
    status = 200
    answer = b"ok"
    location = None
    received: ClassVar[list[tuple[str, dict, bytes]]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(self.status)
        if self.location:
            self.send_header("Location", self.location)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver(server, no_proxy):
    Receiver.status, Receiver.answer, Receiver.location, Receiver.received = 200, b"ok", None, []
    return server, f"{server}{SECRET_PATH}?{SECRET_QUERY}"


def assert_no_secret(error: NotifyError, base: str):
    shown = "".join(traceback.format_exception(error))
    assert base in str(error)
    for secret in ("s3cretT0ken", "B0002", "hunter2", "services"):
        assert secret not in shown


@pytest.mark.parametrize("status", [200, 202, 204])
def test_post_delivers_json(receiver, status):
    _, url = receiver
    Receiver.status, Receiver.answer = status, b"" if status == 204 else b"1"
    body = payload(EVENT, "slack")
    post(url, body, timeout=5)
    ((path, headers, raw),) = Receiver.received
    assert path == f"{SECRET_PATH}?{SECRET_QUERY}"
    assert headers["Content-Type"].startswith("application/json") and json.loads(raw) == body


@pytest.mark.parametrize(
    "status, answer, transient",
    [
        pytest.param(400, b"invalid_payload", False, id="400"),
        pytest.param(404, b"no_service " + SECRET_PATH.encode(), False, id="404 echoing the path"),
        pytest.param(429, b"slow down", True, id="429"),
        pytest.param(500, b"oops", True, id="500"),
        pytest.param(302, b"", False, id="redirect not followed"),
        pytest.param(200, b"Microsoft Teams endpoint returned HTTP error 429", True, id="Teams throttling in a 200"),
    ],
)
def test_post_failures_raise_without_the_secret(receiver, status, answer, transient):
    base, url = receiver
    Receiver.status, Receiver.answer = status, answer
    Receiver.location = f"{base}/elsewhere" if status == 302 else None
    with pytest.raises(NotifyError) as caught:
        post(url, {"text": "x"}, timeout=5)
    assert_no_secret(caught.value, base)
    assert caught.value.status == (429 if status == 200 else status) and caught.value.transient is transient
    assert [p for p, _, _ in Receiver.received] == [f"{SECRET_PATH}?{SECRET_QUERY}"]


def test_post_connection_refused(no_proxy):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(NotifyError, match="cannot reach") as caught:
        post(f"http://user:pw@127.0.0.1:{port}{SECRET_PATH}?{SECRET_QUERY}", {"text": "x"}, timeout=5)
    assert_no_secret(caught.value, base)
    assert "pw" not in str(caught.value) and caught.value.transient


def test_post_sends_the_user_and_password_of_the_url_as_basic_auth(receiver):
    """As curl does: percent-escapes in them are undone, and they are not part of the host."""
    base, url = receiver
    with_credentials = url.replace("http://", "http://hook%40user:hun%3Ater2@")
    post(with_credentials, {"text": "x"}, timeout=5)
    ((path, headers, _),) = Receiver.received
    assert path == f"{SECRET_PATH}?{SECRET_QUERY}"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"hook@user:hun:ter2").decode("ascii")
    Receiver.status, Receiver.answer = 401, b"bad credentials for hook@user"
    with pytest.raises(NotifyError, match="HTTP 401") as caught:
        post(with_credentials, {"text": "x"}, timeout=5)
    assert_no_secret(caught.value, base)
    assert "ter2" not in str(caught.value) and "user" not in str(caught.value)


def test_post_times_out_on_a_server_that_never_answers(no_proxy):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(NotifyError, match="timed out") as caught:
            post(base + SECRET_PATH, {"text": "x"}, timeout=0.3)
    assert_no_secret(caught.value, base)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://hooks.slack.com/services/T/B/X", "https://hooks.slack.com"),
        ("https://user:pw@example.com:8443/hook?token=1", "https://example.com:8443"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("ftp://example.com/x", "<invalid URL>"),
        ("https:///nohost", "<invalid URL>"),
        ("https://example.com:99999/x", "<invalid URL>"),
        ("not a url", "<invalid URL>"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url, problem",
    [
        ("https://hooks.slack.com/services/T/B/X", None),
        ("http://user:s3cret@127.0.0.1:9000/x?sig=1", None),
        ("ftp://user:s3cret@example.com/x", "does not start with http:// or https://"),
        ("user:s3cret@example.com/x", "does not start with http:// or https://"),
        ("https:///s3cret", "has no host"),
        ("https://user:s3cret@example.com:99999/x", "has a port that is not a number from 0 to 65535"),
        ("https://user:s3cret@example.com:port/x", "has a port that is not a number from 0 to 65535"),
        pytest.param(
            "https://user:s3/cret@example.com/x", "has a port that is not a number from 0 to 65535", id="/ in password"
        ),
        ("https://[::1/s3cret", "cannot be read as a URL (a [ without its ])"),
        ("https://example.com/s3cret\n", "contains a space or a line break"),
    ],
)
def test_url_problem(url, problem):
    assert url_problem(url) == problem


def test_a_bad_notify_url_is_refused_at_start_up_without_echoing_it():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    url = "https://hook:s3cret@example.com:port/s3cretT0ken"
    args = parser.parse_args(["--notify-url", url], argparse.Namespace(shard=None))
    with pytest.raises(ConfigError) as caught:
        settings_from_args(args, Path("models"), Path("state"))
    assert str(caught.value) == (
        "--notify-url / SENSOR_NOTIFY_URL: the webhook URL has a port that is not a number from 0 to 65535 "
        "(the URL is a secret, so it is not shown)"
    )


def test_post_refuses_an_invalid_url_without_echoing_it():
    with pytest.raises(NotifyError) as caught:
        post("ftp://example.com/s3cretT0ken", {}, timeout=1)
    assert "s3cretT0ken" not in str(caught.value) and caught.value.status is None


def test_announce_annotates_outages_across_runs_and_never_sends_or_groups_them(influxd, database, receiver, tmp_path):
    """Two runs through a real InfluxDB and a webhook: sensor a has an anomaly, sensor b of the same site an
    outage spanning both runs. b's outage is one point of kind missing; the only message and the only
    incident are a's."""
    _, url = receiver
    sites = [
        line_protocol("READINGS", {"uniqueID": s, "siteRef": "S"}, {"val_num": 1.0}, int(T0.timestamp())) for s in "ab"
    ]
    local_influxd.write(influxd.url, database, sites)
    settings = AlertSettings(
        events_measurement="ANOMALY_EVENTS",
        chronograf_annotations=False,
        incident_tag="siteRef",
        incidents_measurement="INCIDENTS",
        incident_window=HOUR,
        notify_url=url,
        notify_style="json",
        notify_cooldown=pd.Timedelta(0),
        notify_max_age=pd.Timedelta(days=1),
        state_file=tmp_path / "state.json",
    )
    connection = Connection(url=influxd.url, api="influxql", database=database, retries=0)

    def run_at(now: pd.Timestamp, scored: dict[str, pd.DataFrame]) -> dict[str, int]:
        common = Common(connection, Schema(), (), None, SensorConfig({}, {}), I, HOUR, tmp_path, 100, now)
        counts = {"notifications_failed": 0}
        with influx_interact.connect(connection, Schema()) as db:
            scores = {s: as_scores(f, True) for s, f in scored.items()}
            announce(db, settings, common, pd.Timedelta(days=7), scores, {}, counts)
        return counts

    assert run_at(t(4), {"a": points("..xx"), "b": points("..mm")}) == {"notifications_failed": 0}
    assert run_at(t(8), {"a": points("x...", first=4), "b": points("mm..", first=4)}) == {"notifications_failed": 0}

    found = rows(
        influxd.url,
        database,
        'SELECT "kind", "end_ms", "windows", "ongoing", "text" FROM "ANOMALY_EVENTS" GROUP BY "uniqueID"',
    )
    by_sensor = {tags["uniqueID"]: values for tags, values in found}
    start, ms = int(t(2).timestamp()), lambda k: int(t(k).timestamp()) * 1000
    assert [row[:5] for row in by_sensor["a"]] == [[start, "anomaly", ms(4), 3, False]]
    assert [row[:5] for row in by_sensor["b"]] == [[start, "missing", ms(5), 4, False]]  # one point, grown
    assert by_sensor["b"][0][5] == "no readings from 'b': 4 intervals, 2026-01-01 00:30 to 01:15 UTC"
    ((_, incident_rows),) = rows(influxd.url, database, 'SELECT "sensors", "count" FROM "INCIDENTS" GROUP BY "siteRef"')
    assert [(json.loads(row[1]), row[2]) for row in incident_rows] == [(["a"], 1)]
    bodies = [json.loads(body) for _, _, body in Receiver.received]
    assert [(body["kind"], body["sensors"]) for body in bodies] == [("incident", ["a"])]
    state = json.loads(settings.state_file.read_text())
    assert state["sensors"]["b"]["outage"]["end"] == "2026-01-01T01:15:00Z" and "decided" not in state["sensors"]["b"]
