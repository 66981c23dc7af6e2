"""anomaly.settings and anomaly.times: durations, times, --where, the per-sensor files and the connection flags."""

import argparse
import io
import logging
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

import model_predict
from anomaly import logs, sensor_config, settings, times
from anomaly.connection import Connection, connection_from_args
from anomaly.errors import ConfigError

NOW = pd.Timestamp("2026-03-01T12:00:00Z")


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30s", pd.Timedelta(seconds=30)),
        ("15m", pd.Timedelta(minutes=15)),
        ("1h", pd.Timedelta(hours=1)),
        ("7d", pd.Timedelta(days=7)),
        ("2w", pd.Timedelta(days=14)),
        (" 15m ", pd.Timedelta(minutes=15)),
    ],
)
def test_parse_duration(text, expected):
    assert times.parse_duration(text, "--interval") == expected


@pytest.mark.parametrize("text", ["0m", "15", "m", "1.5h", "-1h", "15M", "1h30m", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError, match=re.escape(f"--interval: {text!r} is not a positive duration")):
        times.parse_duration(text, "--interval")


# ---------------------------------------------------------------- parse_time


@pytest.mark.parametrize(
    "text, expected",
    [
        ("now", "2026-03-01T12:00:00Z"),
        ("-90d", "2025-12-01T12:00:00Z"),
        ("-15m", "2026-03-01T11:45:00Z"),
        ("2026-01-31T00:00:00Z", "2026-01-31T00:00:00Z"),
        ("2026-01-31T02:00:00+02:00", "2026-01-31T00:00:00Z"),
        (" 2026-01-31T00:00:00.5Z ", "2026-01-31T00:00:00.5Z"),
    ],
)
def test_parse_time(text, expected):
    stamp = times.parse_time(text, NOW, "--start")
    assert stamp == pd.Timestamp(expected)
    assert str(stamp.tz) == "UTC"


@pytest.mark.parametrize(
    "text, match",
    [
        ("2026-01-31T00:00:00", "'2026-01-31T00:00:00' is not a time; use RFC3339 with a zone"),
        ("2026-01-31", "'2026-01-31' is not a time"),
        ("yesterday", "'yesterday' is not a time"),
        ("", "'' is not a time"),
        ("-90x", "'-90x' is not a time"),
        ("-0d", "'-0d' is not a time"),
    ],
)
def test_parse_time_rejects(text, match):
    with pytest.raises(ConfigError, match="^--start: " + re.escape(match)):
        times.parse_time(text, NOW, "--start")


# ---------------------------------------------------------------- parse_where


@pytest.mark.parametrize(
    "items, expected",
    [
        ([], ()),
        (["siteRef=Campus Energy Centre"], (("siteRef", "Campus Energy Centre"),)),
        (["a=b=c"], (("a", "b=c"),)),
        (["a=1", "b=2"], (("a", "1"), ("b", "2"))),
        (["a="], (("a", ""),)),
    ],
)
def test_parse_where(items, expected):
    assert settings.parse_where(items) == expected


@pytest.mark.parametrize("items, bad", [(["siteRef"], "siteRef"), (["=x"], "=x"), (["a=1", "b"], "b")])
def test_parse_where_rejects(items, bad):
    with pytest.raises(ConfigError, match=re.escape(f"--where: {bad!r} is not KEY=VALUE")):
        settings.parse_where(items)


# ---------------------------------------------------------------- load_sensor_config


def write_files(tmp_path, ratios: str | bytes = "{}", windows: str | bytes = "{}"):
    paths = tmp_path / "threshold_ratios.json", tmp_path / "time_step_sizes.json"
    for path, text in zip(paths, (ratios, windows)):
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return paths


def test_load_sensor_config_defaults(tmp_path):
    cfg = sensor_config.load_sensor_config(*write_files(tmp_path))
    assert (cfg.ratio("s1"), cfg.window("s1")) == (1.0, 15)
    assert dict(cfg.ratios) == {} and dict(cfg.windows) == {}


def test_load_sensor_config_values_and_default_key(tmp_path):
    cfg = sensor_config.load_sensor_config(
        *write_files(tmp_path, '{"default": 2, "s1": 1.5, "Température": 3}', '{"default": 10, "s1": 30}')
    )
    assert cfg.ratio("s1") == 1.5
    assert cfg.ratio("Température") == 3.0
    assert cfg.ratio("other") == 2.0
    assert cfg.window("s1") == 30
    assert cfg.window("other") == 10
    assert "default" not in cfg.ratios and "default" not in cfg.windows
    assert type(cfg.ratio("other")) is float and type(cfg.ratio("Température")) is float
    with pytest.raises(TypeError):
        cfg.ratios["s2"] = 1.0  # read-only once loaded


@pytest.mark.parametrize(
    "which, text, message",
    [
        ("ratios", '{"s1": 0}', "key 's1' has ratio 0; a ratio must be a positive number"),
        ("ratios", '{"s1": -1.5}', "key 's1' has ratio -1.5;"),
        ("ratios", '{"s1": "2"}', "key 's1' has ratio '2';"),
        ("ratios", '{"s1": true}', "key 's1' has ratio True;"),
        ("ratios", '{"s1": null}', "key 's1' has ratio None;"),
        ("ratios", '{"s1": NaN}', "key 's1' has ratio nan;"),
        ("ratios", '{"s1": Infinity}', "key 's1' has ratio inf;"),
        ("ratios", '{"default": 0}', "key 'default' has ratio 0;"),
        ("windows", '{"s1": 1}', "key 's1' has window 1; a window must be a whole number >= 2"),
        ("windows", '{"s1": 2.5}', "key 's1' has window 2.5;"),
        ("windows", '{"s1": 15.0}', "key 's1' has window 15.0;"),
        ("windows", '{"s1": "15"}', "key 's1' has window '15';"),
        ("windows", '{"s1": true}', "key 's1' has window True;"),
        ("windows", '{"default": 0}', "key 'default' has window 0;"),
        ("ratios", '{"s1": 1,}', "not valid JSON at line 1 column 10"),
        ("windows", '{"s1": 15\n', "not valid JSON at line 2 column 1"),
        ("ratios", "", "not valid JSON at line 1 column 1"),
        ("ratios", "[1, 2]", "must be a JSON object mapping sensor id to a number, not list"),
        ("windows", "15", "must be a JSON object mapping sensor id to a number, not int"),
        pytest.param("ratios", '{"s1": ' + "1" * 400 + "}", "key 's1' has ratio 111", id="huge-integer-ratio"),
        pytest.param("ratios", b'{"caf\xe9": 1}', "not UTF-8 text", id="latin-1-file"),
        ("ratios", '{"s1": 1.5, "s2": 2, "s1": 3}', "key 's1' appears twice; keep one"),
        ("windows", '{"default": 4,\n "default": 4}', "key 'default' appears twice; keep one"),
    ],
)
def test_load_sensor_config_errors_name_file_key_and_value(tmp_path, which, text, message):
    ratios, windows = write_files(tmp_path, **{which: text})
    bad = ratios if which == "ratios" else windows
    with pytest.raises(ConfigError, match="^" + re.escape(f"{bad}: {message}")):
        sensor_config.load_sensor_config(ratios, windows)


@pytest.mark.parametrize("missing", ["ratios", "windows"])
def test_load_sensor_config_missing_file(tmp_path, missing):
    ratios, windows = write_files(tmp_path)
    gone = ratios if missing == "ratios" else windows
    gone.unlink()
    with pytest.raises(ConfigError, match="^" + re.escape(f"{gone}: file not found; create it with {{}}")):
        sensor_config.load_sensor_config(ratios, windows)


def test_load_sensor_config_directory_instead_of_file(tmp_path):
    ratios, windows = write_files(tmp_path)
    ratios.unlink()
    ratios.mkdir()
    with pytest.raises(ConfigError, match="^" + re.escape(f"{ratios}: cannot be read")):
        sensor_config.load_sensor_config(ratios, windows)


# ---------------------------------------------------------------- connection flags


@pytest.fixture
def build_parser(monkeypatch):
    """Parser factory with no INFLUX_* variable set; tests set the ones they need before building."""
    for name in (
        "INFLUX_URL",
        "INFLUX_TOKEN",
        "INFLUX_ORG",
        "INFLUX_BUCKET",
        "INFLUX_DATABASE",
        "INFLUX_USERNAME",
        "INFLUX_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)

    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        settings.add_common_arguments(parser)
        return parser

    return build


def connection(build_parser, argv):
    return connection_from_args(build_parser().parse_args(argv))


def test_connection_influxql(build_parser):
    conn = connection(
        build_parser,
        [
            "--url",
            "http://db.example:8086/",
            "--database",
            "sensors",
            "--username",
            "u",
            "--password",
            "s3cret",
            "--timeout",
            "2m",
        ],
    )
    assert conn == Connection(
        url="http://db.example:8086", api="auto", database="sensors", username="u", password="s3cret", timeout_s=120.0
    )
    assert "s3cret" not in repr(conn)


def test_connection_defaults_come_from_environment_at_build_time(build_parser, monkeypatch):
    monkeypatch.setenv("INFLUX_URL", "https://cloud.example")
    monkeypatch.setenv("INFLUX_TOKEN", "tok")
    monkeypatch.setenv("INFLUX_ORG", "org")
    monkeypatch.setenv("INFLUX_BUCKET", "env-bucket")
    parser = build_parser()
    monkeypatch.setenv("INFLUX_BUCKET", "too-late")
    conn = connection_from_args(parser.parse_args(["--api", "flux"]))
    assert (conn.url, conn.api, conn.token, conn.org, conn.bucket) == (
        "https://cloud.example",
        "flux",
        "tok",
        "org",
        "env-bucket",
    )
    assert "tok" not in repr(conn)
    flag = connection_from_args(parser.parse_args(["--api", "flux", "--bucket", "flag-bucket"]))
    assert flag.bucket == "flag-bucket"


@pytest.mark.parametrize("url", ["localhost:8086", "ftp://db.example", "http://", "", "http:///db", " http://db"])
def test_connection_rejects_url(build_parser, url):
    with pytest.raises(ConfigError, match="^" + re.escape(f"--url / INFLUX_URL: {url!r} is not an http(s) URL")):
        connection(build_parser, ["--url", url, "--database", "sensors"])


@pytest.mark.parametrize(
    "url, shown",
    [
        pytest.param("http://admin:s3cret@db.example:badport", "'http://…@db.example:badport'", id="bad port"),
        pytest.param("ftp://admin:s3cret@db.example", "'ftp://…@db.example'", id="not http"),
        pytest.param("admin:s3cret@db.example:8086", "'…@db.example:8086'", id="no scheme"),
        pytest.param("http://admin:s3/cret@db.example", "'http://…@db.example'", id="a / in the password"),
    ],
)
def test_a_rejected_url_is_shown_without_its_user_and_password(build_parser, url, shown):
    with pytest.raises(ConfigError, match=re.escape(f"--url / INFLUX_URL: {shown} is not an http(s) URL")) as caught:
        connection(build_parser, ["--url", url, "--database", "sensors"])
    assert "admin" not in str(caught.value) and "cret" not in str(caught.value)


@pytest.mark.parametrize("userinfo", ["admin:s3cret@", "admin@", ":s3cret@"])
def test_connection_refuses_credentials_in_the_url_and_names_the_variables(build_parser, userinfo):
    with pytest.raises(ConfigError) as caught:
        connection(build_parser, ["--url", f"http://{userinfo}db.example:8086", "--database", "sensors"])
    message = str(caught.value)
    assert message.startswith("--url / INFLUX_URL: 'http://…@db.example:8086' holds a user name or password")
    assert "INFLUX_USERNAME and INFLUX_PASSWORD" in message and "INFLUX_TOKEN" in message
    assert "admin" not in message and "s3cret" not in message


@pytest.mark.parametrize(
    "url, shown",
    [
        pytest.param("http://db.example:8086/?u=admin&p=s3cret", "'http://db.example:8086/?…'", id="1.x query login"),
        pytest.param("http://db.example:8086#admin:s3cret", "'http://db.example:8086#…'", id="fragment"),
        pytest.param("http://db.example:bad?p=s3cret", "'http://db.example:bad?…'", id="bad port and a query"),
    ],
)
def test_a_query_in_the_url_is_refused_and_never_shown(build_parser, url, shown):
    with pytest.raises(ConfigError) as caught:
        connection(build_parser, ["--url", url, "--database", "sensors"])
    message = str(caught.value)
    assert message.startswith(f"--url / INFLUX_URL: {shown} ")
    assert "admin" not in message and "s3cret" not in message


@pytest.mark.parametrize("text", ["01/02/2026 00:00:00+00:00", "14/01/2026 00:00:00+00:00", "Jan 14 2026 00:00Z"])
def test_times_on_the_command_line_are_iso_8601_only(text):
    from anomaly import times

    with pytest.raises(ConfigError, match=re.escape(f"--start: {text!r} is not a time")):
        times.parse_time(text, pd.Timestamp("2026-01-15", tz="UTC"), "--start")
    assert times.parse_time("2026-01-14T00:00:00+01:00", pd.Timestamp("2026-01-15", tz="UTC"), "--start") == (
        pd.Timestamp("2026-01-13T23:00:00Z")
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--token", "t", "--org", "o"],
        ["--token", "t", "--bucket", "b"],
        ["--org", "o", "--bucket", "b"],
        ["--token", "", "--org", "o", "--bucket", "b"],
    ],
)
def test_connection_flux_needs_token_org_and_bucket(build_parser, argv):
    with pytest.raises(ConfigError, match=re.escape("--api flux needs INFLUX_TOKEN, INFLUX_ORG and INFLUX_BUCKET")):
        connection(build_parser, ["--api", "flux", *argv])


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--api", "influxql"], "--api influxql needs INFLUX_DATABASE"),
        ([], "set INFLUX_DATABASE (InfluxDB 1.x/3.x) or INFLUX_BUCKET (2.x)"),
        (["--database", "d", "--timeout", "0s"], "--timeout: '0s' is not a positive duration"),
    ],
)
def test_connection_other_errors(build_parser, argv, match):
    with pytest.raises(ConfigError, match="^" + re.escape(match)):
        connection(build_parser, argv)


def test_connection_rejects_unknown_api(build_parser, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--api", "sql"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'sql'" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [(None, None), ("1/1", (1, 1)), ("2/4", (2, 4))])
def test_parse_shard(text, expected):
    assert settings.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/2"])
def test_parse_shard_rejects(text):
    with pytest.raises(ConfigError, match=re.escape(f"--shard: {text!r} is not I/N")):
        settings.parse_shard(text)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_every_sensor(count):
    ids = [f"sensor {n}" for n in range(2000)] + ["ümlaut", "a,b=c d", ""]
    parts = [{s for s in ids if settings.in_shard(s, (index, count))} for index in range(1, count + 1)]
    assert sum(len(p) for p in parts) == len(ids)
    assert set().union(*parts) == set(ids)
    if count > 1:
        assert min(len(p) for p in parts) > 0.8 * len(ids) / count  # roughly even


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_and_stays_below_log_lines(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("INFO")
    with logs.progress(12) as bar:
        bar.update(3)
        bar.refresh()
        logging.getLogger("x").warning("sensor 'a': trained")
        bar.update(1)
        bar.refresh()
    text = stream.getvalue()
    line = text.index("sensor 'a': trained")
    assert "3/12 [" in text[:line] and "sensors" in text[:line]
    assert "4/12 [" in text[line:]
    # The bar is cleared (blanked, carriage return) before the log line, which then stands whole on its own
    # row; the bar is drawn again below it.
    row = text[text.rindex("\r", 0, line) : text.index("\n", line)]
    assert "|" not in row and text[: text.rindex("\r", 0, line)].endswith(" ")
    assert text[line:].index("3/12") < text[line:].index("4/12")


def test_no_progress_bar_under_cron_or_a_pipe():
    stream = io.StringIO()  # no terminal, as under cron, systemd or a pipe
    with logs.progress(12, stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue() == ""


# ---------------------------------------------------------------- state_dir


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"STATE_DIRECTORY": "/var/lib/s", "XDG_STATE_HOME": "/x", "HOME": "/h"}, "/var/lib/s"),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a"),  # StateDirectory= naming two
        ({"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/x", "HOME": "/h"}, "/x/sensor-anomaly"),
        ({"XDG_STATE_HOME": "relative/state", "HOME": "/h"}, "/h/.local/state/sensor-anomaly"),
        ({"XDG_STATE_HOME": "", "HOME": "/h"}, "/h/.local/state/sensor-anomaly"),
        ({"HOME": "/opt/sensor-anomaly"}, "/opt/sensor-anomaly/.local/state/sensor-anomaly"),
    ],
)
def test_state_dir(environ, expected):
    assert settings.state_dir(environ) == Path(expected)


@pytest.mark.parametrize(
    "flags, expected",
    [
        pytest.param([], (96, 1.0, 0.1), id="defaults: a day of 15-minute windows"),
        pytest.param(["--threshold", "fixed", "--dynamic-history", "junk"], (None, 1.0, 0.1), id="fixed: no history"),
        pytest.param(["--dynamic-history", "2h", "--dynamic-floor", "0.5"], (8, 0.5, 0.1), id="dynamic"),
        pytest.param(["--dynamic-history", "15m"], "--dynamic-history: 15m must hold at least 2 intervals", id="one"),
        pytest.param(["--dynamic-floor", "-1"], "--dynamic-floor: -1.0 must be a number >= 0", id="floor"),
        pytest.param(["--level-margin", "inf"], "--level-margin: inf must be a number >= 0", id="margin"),
    ],
)
def test_the_rule_flags_scoring_and_tuning_share_are_checked_once(flags, expected):
    parser = argparse.ArgumentParser()
    model_predict.add_rule_arguments(parser)
    args = parser.parse_args(flags)
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match="^" + re.escape(expected)):
            model_predict.rule_policy(args, pd.Timedelta(minutes=15))
        return
    policy = model_predict.rule_policy(args, pd.Timedelta(minutes=15))
    assert (policy.dynamic_history, policy.dynamic_floor, policy.level_margin) == expected


@pytest.mark.parametrize("budget", ["-1", "nan"])
def test_the_cold_start_alarm_budget_must_be_a_rate(budget):
    from anomaly import cold_start

    parser = argparse.ArgumentParser()
    cold_start.add_arguments(parser)
    assert cold_start.settings_from_args(parser.parse_args([])).alarm_budget == 0.5
    with pytest.raises(ConfigError, match="^" + re.escape(f"--cold-start-alarm-budget: {float(budget)} must be")):
        cold_start.settings_from_args(parser.parse_args(["--cold-start-alarm-budget", budget]))
