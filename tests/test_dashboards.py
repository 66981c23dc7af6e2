"""Checks of the operations stack: the Chronograf and Grafana dashboards, Grafana's provisioning, the compose
profiles `demo` and `grafana`, and the seed service's data generator.

What was not run: no Docker engine, Chronograf, Grafana or InfluxDB 2.x runs where these tests run, so no
container is started, no dashboard is rendered and no Grafana (Flux) query is executed. Instead the files
are parsed and checked against each other and against the code: the dashboards load as JSON in the shape
Chronograf 1.10 and Grafana read, their cells and panels do not overlap, every template variable they
use is defined, their queries name the measurements, fields and tag the jobs write by default
(READINGS/val_num, PREDICT_ANOMALY with loss, threshold, anomaly, score and val_num, JOB_HEALTH with its
fields, tag uniqueID) and the bucket compose creates; each has a cell or panel comparing the score of
every sensor against 1.0, the threshold; Grafana's provisioning YAML parses, its data source takes the
token from variables compose sets, and its dashboards path is the one compose mounts; every file compose
mounts exists. Chronograf's InfluxQL queries do run, with its template variables filled in, against a real
InfluxDB 1.x (Chronograf reaches 2.7 through the same InfluxQL, by its DBRP mapping). The seed's generator
does run: through the InfluxDB 2.x client against the imitation of InfluxDB 2.7 in test_flux.py, and
through the 1.x API against a real influxd.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pandas as pd
import yaml
from conftest import ROOT, rows
from test_deploy_files import compose, environment, image_files
from test_flux import BUCKET, ORG, TOKEN, fake  # noqa: F401  (fake is a fixture)

from anomaly import settings
from anomaly.influx.line_protocol import line_protocol
from tools import local_influxd, sensor_data

CHRONOGRAF = ROOT / "deploy" / "chronograf" / "sensor-anomaly.dashboard"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"
GRAFANA_DASHBOARD = GRAFANA / "dashboards" / "sensor-anomaly.json"
JOB_HEALTH = "JOB_HEALTH"
JOB_HEALTH_FIELDS = {
    "duration_s",
    "sensors_selected",
    "sensors_done",
    "sensors_skipped",
    "sensors_failed",
    "anomalies",
    "exit_status",
}
JOB_HEALTH_TAGS = {"job", "host"}
SCORE_FIELDS = {"loss", "threshold", "anomaly", "score"}
CHRONOGRAF_BUILTINS = {":dashboardTime:", ":upperDashboardTime:", ":interval:"}
CHRONOGRAF_CELL_TYPES = {
    "line",
    "line-stacked",
    "line-stepplot",
    "line-plus-single-stat",
    "bar",
    "single-stat",
    "gauge",
    "table",
    "note",
}


def defaults():
    """The schema the jobs use unless told otherwise: the names the dashboards must match."""
    import argparse

    parser = argparse.ArgumentParser()
    settings.add_common_arguments(parser)
    return parser.parse_args([])


def bucket() -> str:
    """The bucket compose sets InfluxDB up with, by default."""
    setup = environment(compose()["services"]["influxdb"])["DOCKER_INFLUXDB_INIT_BUCKET"]
    match = re.fullmatch(r"\$\{INFLUX_BUCKET:-(\w+)\}", setup)
    assert match, setup
    return match[1]


def identifiers(influxql: str) -> set[str]:
    """Double-quoted names in an InfluxQL query: measurements, fields, tags, aliases."""
    return set(re.findall(r'"([^"]+)"', influxql))


def balanced(text: str) -> bool:
    """Brackets nest and close, outside string literals; string literals close."""
    stack, pairs, quote = [], {")": "(", "]": "[", "}": "{"}, None
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and quote is None


def no_overlap(boxes: list[tuple[str, int, int, int, int]]) -> None:
    cells = {}
    for name, x, y, w, h in boxes:
        for i in range(x, x + w):
            for j in range(y, y + h):
                assert (i, j) not in cells, f"{name!r} overlaps {cells[(i, j)]!r}"
                cells[(i, j)] = name


# ------------------------------------------------------------------ Chronograf


def chronograf() -> dict:
    return json.loads(CHRONOGRAF.read_text(encoding="utf-8"))


def chronograf_queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(cell["name"], q["query"]) for cell in dashboard["cells"] for q in cell["queries"]]


def test_chronograf_dashboard_has_the_shape_chronograf_loads():
    dashboard = chronograf()
    # Chronograf reads the id as a number; a negative one cannot clash with a dashboard made in the UI.
    assert isinstance(dashboard["id"], int) and dashboard["id"] < 0
    assert dashboard["name"] and dashboard["organization"] == "default"
    ids = [cell["i"] for cell in dashboard["cells"]]
    assert len(ids) == len(set(ids)) >= 5
    for cell in dashboard["cells"]:
        assert cell["type"] in CHRONOGRAF_CELL_TYPES, cell["type"]
        assert all(isinstance(cell[k], int) for k in "xywh") and cell["x"] >= 0 and cell["x"] + cell["w"] <= 12
        assert set(cell["axes"]) <= {"x", "y", "y2"}
        assert all(axis["scale"] in ("linear", "log") for axis in cell["axes"].values())
        for color in cell["colors"]:
            assert re.fullmatch(r"#[0-9A-Fa-f]{6}", color["hex"]) and color["type"] == "scale"
        assert cell["queries"] and cell["note"]
        for query in cell["queries"]:
            assert query["type"] == "influxql" and query["source"] == ""
            assert query["queryConfig"]["rawText"] == query["query"]
    no_overlap([(c["name"], c["x"], c["y"], c["w"], c["h"]) for c in dashboard["cells"]])


def test_chronograf_template_variables_are_defined_and_used():
    dashboard = chronograf()
    defined = {t["tempVar"] for t in dashboard["templates"]}
    used = {var for _, query in chronograf_queries(dashboard) for var in re.findall(r":[\w-]+:", query)}
    assert used - CHRONOGRAF_BUILTINS == defined
    (sensor,) = dashboard["templates"]
    schema = defaults()
    assert sensor["type"] == "tagValues" and sensor["tempVar"] == ":sensor:"
    assert sensor["query"] == {
        "influxql": "SHOW TAG VALUES ON :database: FROM :measurement: WITH KEY=:tagKey:",
        "db": bucket(),
        "measurement": schema.measurement,
        "tagKey": schema.sensor_tag,
        "fieldKey": "",
    }


def test_chronograf_queries_read_the_compose_bucket_in_the_dashboard_time_range():
    target = f'"{bucket()}"."autogen".'  # InfluxDB 2.7's virtual DBRP mapping for a bucket without a slash
    for name, query in chronograf_queries(chronograf()):
        assert balanced(query), (name, query)
        assert "time > :dashboardTime: AND time < :upperDashboardTime:" in query, name
        assert re.search(r"\bFROM " + re.escape(target) + r'"\w+"', query), (name, query)


def test_chronograf_cells_show_flags_loss_and_job_health():
    schema = defaults()
    out, field, tag = schema.output_measurement, schema.field, schema.sensor_tag
    cells = {cell["name"]: [q["query"] for q in cell["queries"]] for cell in chronograf()["cells"]}
    per_sensor = f'"{tag}" = :sensor:'
    readings = [
        name
        for name, qs in cells.items()
        if any(f'mean("{field}")' in q and f'"{schema.measurement}"' in q and per_sensor in q for q in qs)
        and any(f'"{out}"' in q and '"anomaly" = true' in q and f'SELECT "{field}"' in q for q in qs)
    ]
    assert len(readings) == 1, "no cell draws a sensor's readings with its flagged windows"
    loss = [
        name
        for name, qs in cells.items()
        if any({"loss", "threshold"} <= identifiers(q) and f'"{out}"' in q and per_sensor in q for q in qs)
    ]
    assert len(loss) == 1, "no cell draws a sensor's loss against its threshold"
    health = [q for qs in cells.values() for q in qs if f'"{JOB_HEALTH}"' in q]
    named = set().union(*map(identifiers, health))
    assert named >= JOB_HEALTH_FIELDS | JOB_HEALTH_TAGS, sorted(JOB_HEALTH_FIELDS | JOB_HEALTH_TAGS - named)
    assert identifiers(" ".join(q for qs in cells.values() for q in qs)) >= SCORE_FIELDS | {field}


def score_fields_written() -> set[str]:
    """The fields sensor_predict.py writes on every score point besides the reading: the literal keys of the
    dict in ``score_lines``, the scoring pipeline's write step (model_predict.py)."""
    tree = ast.parse((ROOT / "model_predict.py").read_text(encoding="utf-8"))
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "score_lines"]
    return _dict_keys(function)


def test_the_dashboards_read_only_score_fields_the_scorer_writes():
    schema = defaults()
    out, tag = schema.output_measurement, schema.sensor_tag
    written = score_fields_written() | {schema.field}
    assert written >= SCORE_FIELDS
    chronograf_names = {
        n
        for _, q in chronograf_queries(chronograf())
        if f'"{out}"' in q
        for n in identifiers(re.sub(r'AS "[^"]+"', "", q))  # aliases name columns, not fields
    }
    grafana_names = {n for _, q in grafana_queries(grafana_dashboard()) if f'"{out}"' in q for n in flux_fields(q)}
    for names in (chronograf_names, grafana_names):
        unknown = names - written - {out, tag, bucket(), "autogen", "_time", "_value"}
        assert not unknown, f"the dashboards read {sorted(unknown)} from {out}, which sensor_predict.py does not write"
    assert "score" in chronograf_names and "score" in grafana_names


def test_chronograf_compares_the_score_of_every_sensor_against_1():
    schema = defaults()
    out, tag = schema.output_measurement, schema.sensor_tag
    cells = {cell["name"]: cell for cell in chronograf()["cells"]}
    compared = [
        name
        for name, cell in cells.items()
        for q in cell["queries"]
        if re.search(r'\bSELECT max\("score"\) AS "score" FROM ', q["query"])
        and f'"{out}"' in q["query"]
        and re.search(rf'GROUP BY time\(:interval:\), "{tag}"', q["query"])
        and ":sensor:" not in q["query"]
    ]
    assert len(compared) == 1, "no cell draws the score of every sensor, one line each"
    cell = cells[compared[0]]
    assert cell["type"] == "line" and cell["axes"]["y"]["label"] == "score"
    # Chronograf draws no reference line, so a query draws the constant 1.0 wherever scores were written.
    (line,) = [q["query"] for q in cell["queries"] if "* 0 + 1 AS" in q["query"]]
    assert 'max("score") * 0 + 1 AS' in line and f'"{out}"' in line and f'"{tag}"' not in line
    assert "1.0" in cell["note"] and "loss / effective threshold" in cell["note"]


def chronograf_on_1x(query: str, database: str, sensor: str) -> str:
    """A Chronograf query as Chronograf sends it, its template variables filled in, aimed at ``database``."""
    filled = query.replace(f'"{bucket()}"."autogen".', f'"{database}"."autogen".')
    for variable, value in {
        ":dashboardTime:": "now() - 7d",
        ":upperDashboardTime:": "now()",
        ":interval:": "1h",
        ":sensor:": "'" + sensor + "'",
    }.items():
        filled = filled.replace(variable, value)
    return filled


def test_chronograf_queries_run_on_influxdb_1x_and_the_score_cell_draws_a_line_per_sensor_and_1_0(influxd, database):
    """Every cell's queries run and find what the jobs wrote; the score cell gives one series per sensor (its
    highest score per :interval:, here 1h) and a series of 1.0 at each interval that has scores."""
    schema = defaults()
    hour = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=2)  # two whole hours before now
    scores = {"AHU-1": [0.5, 2.0, 0.25, 0.125], "AHU-2": [0.75, 0.125, 4.0, 0.5]}
    lines = []
    for sensor_id, values in scores.items():
        tags = {schema.sensor_tag: sensor_id}
        for k, score in enumerate(values):
            stamp = int((hour + k * pd.Timedelta(minutes=30)).timestamp())
            fields = {schema.field: 20.0 + k, "loss": score / 4, "threshold": 0.25, "anomaly": score > 1}
            lines.append(line_protocol(schema.output_measurement, tags, {**fields, "score": score}, stamp))
            lines.append(line_protocol(schema.measurement, tags, {schema.field: 20.0 + k}, stamp))
    health = dict.fromkeys(JOB_HEALTH_FIELDS | {"windows"}, 1.0)
    lines.append(line_protocol(JOB_HEALTH, {"job": "sensor_predict", "host": "h"}, health, int(hour.timestamp())))
    local_influxd.write(influxd.url, database, lines)
    answers: dict[str, list[list[dict]]] = {}
    for name, query in chronograf_queries(chronograf()):
        result = local_influxd.query(influxd.url, chronograf_on_1x(query, database, "AHU-1"), database)["results"][0]
        assert "error" not in result, (name, query, result)
        answers.setdefault(name, []).append(result.get("series", []))
    for name, results in answers.items():
        assert all(results), f"a query of {name!r} found nothing"
    (name,) = [n for n in answers if n.startswith("Score of every sensor")]
    per_sensor, (line,) = answers[name]
    peaks = {s["tags"][schema.sensor_tag]: [v for _, v in s["values"]] for s in per_sensor}
    assert peaks == {"AHU-1": [2.0, 0.25], "AHU-2": [0.75, 4.0]}
    assert [v for _, v in line["values"]] == [1, 1] and "tags" not in line


# ------------------------------------------------------------------ Grafana


def grafana_dashboard() -> dict:
    return json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))


def datasource() -> dict:
    document = yaml.safe_load((GRAFANA / "datasources" / "influxdb.yaml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    return source


def grafana_queries(dashboard: dict) -> list[tuple[str, str]]:
    found = [(panel["title"], t["query"]) for panel in dashboard["panels"] for t in panel["targets"]]
    found += [(a["name"], a["target"]["query"]) for a in dashboard["annotations"]["list"] if "target" in a]
    found += [(v["name"], v["query"]) for v in dashboard["templating"]["list"]]
    return found


def test_grafana_dashboard_panels_use_the_provisioned_data_source():
    dashboard, uid = grafana_dashboard(), datasource()["uid"]
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert [p["id"] for p in dashboard["panels"]] == list(range(1, len(dashboard["panels"]) + 1))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == uid and t["refId"] for t in panel["targets"])
    no_overlap(
        [
            (p["title"], p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"], p["gridPos"]["h"])
            for p in dashboard["panels"]
        ]
    )
    variables = dashboard["templating"]["list"]
    assert all(v["datasource"]["uid"] == uid for v in variables)


def test_grafana_flux_queries_are_whole_and_their_variables_defined():
    dashboard = grafana_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for name, query in grafana_queries(dashboard):
        assert balanced(query), (name, query)
        used = set(re.findall(r"\$\{(\w+)(?::\w+)?\}", query))
        assert used <= defined, (name, used - defined)
        if name in defined:
            continue
        assert query.startswith("from(bucket: v.defaultBucket)\n  |> range(start: "), (name, query)
        # Only "time since the last run" looks past the dashboard's range, on purpose.
        assert "range(start: v.timeRangeStart, stop: v.timeRangeStop)" in query or name.startswith("Time since"), name
    (sensor,) = dashboard["templating"]["list"]
    schema = defaults()
    assert f'tag: "{schema.sensor_tag}"' in sensor["query"] and f'"{schema.measurement}"' in sensor["query"]


def flux_fields(query: str) -> set[str]:
    """Field names a Flux query filters on or keeps: r._field == "x", and column names in keep()."""
    found = set(re.findall(r'r\._field == "(\w+)"', query))
    for columns in re.findall(r"keep\(columns: \[([^\]]*)\]\)", query):
        found |= set(re.findall(r'"(\w+)"', columns))
    return found


def test_grafana_panels_show_flags_loss_and_job_health():
    schema = defaults()
    out, field, tag = schema.output_measurement, schema.field, schema.sensor_tag
    dashboard = grafana_dashboard()
    panels = {p["title"]: [t["query"] for t in p["targets"]] for p in dashboard["panels"]}
    per_sensor = f'r.{tag} == "${{sensor}}"'
    readings = [
        title
        for title, qs in panels.items()
        if any(
            f'r._measurement == "{schema.measurement}"' in q and field in flux_fields(q) and per_sensor in q for q in qs
        )
        and any(f'"{out}"' in q and {field, "anomaly"} <= flux_fields(q) and "r.anomaly == true" in q for q in qs)
    ]
    assert len(readings) == 1, "no panel draws a sensor's readings with its flagged windows"
    loss = [
        title
        for title, qs in panels.items()
        if any(f'"{out}"' in q and {"loss", "threshold"} <= flux_fields(q) and per_sensor in q for q in qs)
    ]
    assert len(loss) == 1, "no panel draws a sensor's loss against its threshold"
    health = [q for qs in panels.values() for q in qs if f'r._measurement == "{JOB_HEALTH}"' in q]
    named = set().union(*map(flux_fields, health))
    assert named >= JOB_HEALTH_FIELDS | JOB_HEALTH_TAGS, sorted(JOB_HEALTH_FIELDS | JOB_HEALTH_TAGS - named)
    (annotation,) = [a for a in dashboard["annotations"]["list"] if "target" in a]
    assert annotation["enable"] and annotation["datasource"]["uid"] == datasource()["uid"]
    query = annotation["target"]["query"]
    assert f'r._measurement == "{out}"' in query and flux_fields(query) == {"anomaly"} and per_sensor in query
    assert re.search(r"\(\{_time: r\._time, text: ", query), "an annotation needs a time and a text column"


def test_grafana_compares_the_score_of_every_sensor_against_a_line_at_1():
    schema = defaults()
    out, tag = schema.output_measurement, schema.sensor_tag
    compared = [
        panel
        for panel in grafana_dashboard()["panels"]
        if any(
            f'r._measurement == "{out}"' in t["query"]
            and flux_fields(t["query"]) - {"_time", "_value", tag} == {"score"}
            and f'group(columns: ["{tag}"])' in t["query"]
            and "${sensor}" not in t["query"]
            for t in panel["targets"]
        )
    ]
    assert len(compared) == 1, "no panel draws the score of every sensor, one line each"
    (panel,) = compared
    assert (
        panel["type"] == "timeseries"
        and "aggregateWindow(every: v.windowPeriod, fn: max" in panel["targets"][0]["query"]
    )
    defaults_ = panel["fieldConfig"]["defaults"]
    assert defaults_["thresholds"]["mode"] == "absolute"
    drawn = [step for step in defaults_["thresholds"]["steps"] if step["value"] is not None]
    assert [(step["value"], step["color"] != "transparent") for step in drawn] == [(1, True)]
    assert defaults_["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area", "dashed+area")
    names = [p["value"] for o in panel["fieldConfig"]["overrides"] for p in o["properties"] if p["id"] == "displayName"]
    assert names == [f"${{__field.labels.{tag}}}"]  # each line named after its sensor


def test_grafana_data_source_takes_its_secrets_from_variables_compose_sets():
    source = datasource()
    services = compose()["services"]
    app, setup = environment(services["app"]), environment(services["influxdb"])
    grafana = environment(services["grafana"])
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "Flux"
    assert source["url"] == app["INFLUX_URL"]
    expected = {
        "token": ("INFLUX_TOKEN", "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"),
        "organization": ("INFLUX_ORG", "DOCKER_INFLUXDB_INIT_ORG"),
        "defaultBucket": ("INFLUX_BUCKET", "DOCKER_INFLUXDB_INIT_BUCKET"),
    }
    values = {**source["jsonData"], **source["secureJsonData"]}
    for key, (variable, setup_key) in expected.items():
        assert values[key] == f"${variable}", f"{key} must come from ${variable}, not be written in the file"
        assert grafana[variable] == setup[setup_key], f"grafana's {variable} differs from InfluxDB's setup"
    text = (GRAFANA / "datasources" / "influxdb.yaml").read_text(encoding="utf-8")
    assert "dev-only" not in text


def container_to_host(service: dict, container_path: str) -> Path | None:
    """The repository path a service sees at ``container_path`` through its bind mounts, if any."""
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if source.startswith("./"):
            try:
                relative = PurePosixPath(container_path).relative_to(target)
            except ValueError:
                continue
            return ROOT / source / relative
    return None


def test_grafana_dashboard_provider_reads_the_directory_compose_mounts():
    grafana = compose()["services"]["grafana"]
    assert container_to_host(grafana, "/etc/grafana/provisioning") == ROOT / "./deploy/grafana/provisioning"
    document = yaml.safe_load((GRAFANA / "dashboards" / "sensor-anomaly.yaml").read_text(encoding="utf-8"))
    (provider,) = document["providers"]
    assert document["apiVersion"] == 1 and provider["type"] == "file"
    directory = container_to_host(grafana, provider["options"]["path"])
    assert directory is not None and directory.resolve() == GRAFANA_DASHBOARD.parent
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_to_host(grafana, home).resolve() == GRAFANA_DASHBOARD


# ------------------------------------------------------------------ compose: profiles, mounts, seed


def test_core_services_need_no_profile_and_depend_on_no_profiled_service():
    services = compose()["services"]
    assert services["seed"]["profiles"] == ["demo"] and services["grafana"]["profiles"] == ["grafana"]
    for name in ("influxdb", "chronograf", "app"):
        assert "profiles" not in services[name], name
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
            # Compose refuses a project where an active service depends on one its profiles leave out.
            assert set(services[dependency].get("profiles", [])) <= set(service.get("profiles", [])), (name, dependency)


def test_every_file_compose_mounts_exists():
    mounts = 0
    for name, service in compose()["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).partition(":")[0]
            if source.startswith(("./", "../", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
                assert str(volume).endswith(":ro"), f"{name} may change {source}: mount it read-only"
                mounts += 1
    assert mounts >= 2


def test_chronograf_loads_dashboards_from_its_mount():
    chronograf_service = compose()["services"]["chronograf"]
    resources = environment(chronograf_service)["RESOURCES_PATH"]
    directory = container_to_host(chronograf_service, resources)
    assert directory is not None and directory.resolve() == CHRONOGRAF.parent
    assert CHRONOGRAF in directory.resolve().glob("*.dashboard")


def test_seed_writes_to_the_compose_bucket_with_the_token_from_the_environment():
    services = compose()["services"]
    seed, app, setup = services["seed"], environment(services["app"]), environment(services["influxdb"])
    command = seed["command"]
    assert command[:3] == ["python", "-m", "tools.sensor_data"]
    args = sensor_data.build_parser().parse_args(command[3:])
    assert args.url == app["INFLUX_URL"] and args.bucket == app["INFLUX_BUCKET"] and args.database is None
    assert "--token" not in command, "a token on the command line shows in ps and docker inspect"
    env = environment(seed)
    assert env["INFLUX_TOKEN"] == setup["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert env["INFLUX_ORG"] == setup["DOCKER_INFLUXDB_INIT_ORG"]
    assert seed["build"] == services["app"]["build"]
    assert seed["depends_on"]["influxdb"]["condition"] == "service_healthy"
    assert {"tools/__init__.py", "tools/sensor_data.py", "anomaly/settings.py", "influx_interact.py"} <= image_files()


def run_seed(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.sensor_data", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_seed_writes_through_the_2x_client(fake):  # noqa: F811  (the fixture imported from test_flux)
    env = {"PATH": "/usr/bin:/bin", "INFLUX_TOKEN": TOKEN, "INFLUX_ORG": ORG}
    now = "2026-11-25T00:00:00Z"
    result = run_seed(["--url", fake.url, "--bucket", BUCKET, "--sensors", "2", "--days", "1", "--now", now], env)
    assert result.returncode == 0, result.stderr
    assert fake.writes and {tuple(sorted(w["fields"].items())) for w in fake.writes} == {
        (("bucket", BUCKET), ("org", ORG), ("precision", "s"))
    }
    lines = [line for w in fake.writes for line in w["body"].splitlines()]
    assert len(lines) == 2 * 288 and all(
        line.startswith("READINGS,siteRef=") and ",uniqueID=AHU-" in line for line in lines
    )
    stamps = {int(line.rsplit(" ", 1)[1]) for line in lines}
    assert max(stamps) == pd.Timestamp(now).timestamp() - 300 and "injected flatline" not in result.stdout
    wrong = run_seed(["--url", fake.url, "--bucket", BUCKET, "--days", "1"], dict(env, INFLUX_TOKEN="wrong-42"))
    assert wrong.returncode == 1 and "INFLUX_TOKEN" in wrong.stderr and "wrong-42" not in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_seed_still_writes_a_1x_database_for_the_demo(influxd, tmp_path):
    result = run_seed(
        [
            "--url",
            influxd.url,
            "--database",
            "seeded",
            "--sensors",
            "1",
            "--days",
            "1",
            "--now",
            "2026-11-25T00:00:00Z",
        ],
        {"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    ((_, values),) = rows(influxd.url, "seeded", 'SELECT count("val_num") FROM "READINGS"')
    assert values[0][1] == 288


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls of ``name`` or ``something.name`` in a module."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "attr", None) == name or getattr(node.func, "id", None) == name)
    ]


def _dict_keys(node: ast.AST) -> set[str]:
    """The literal keys of every dict display in an expression (``**`` unpacking has none)."""
    return {
        key.value for d in ast.walk(node) if isinstance(d, ast.Dict) for key in d.keys if isinstance(key, ast.Constant)
    }


def recorded_runs() -> dict[str, set[str]]:
    """{job tag value: field names} of the JOB_HEALTH point of every job that writes one: the keys of the
    health dict its module returns in ``runner.Outcome(status, {...})``, named by its ``runner.Job("job", ...)``,
    plus the keys the runner's ``record_run(job, host, {...}, time)`` call adds."""
    runner_tree = ast.parse((ROOT / "anomaly" / "runner.py").read_text(encoding="utf-8"))
    (record,) = _calls(runner_tree, "record_run")
    added = _dict_keys(record.args[2])
    found: dict[str, set[str]] = {}
    for path in ROOT.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        health = set().union(*(_dict_keys(call.args[1]) for call in _calls(tree, "Outcome") if len(call.args) > 1))
        for job in _calls(tree, "Job"):
            if health:
                found.setdefault(job.args[0].value, set()).update(health | added)
    return found


def test_the_dashboards_show_what_the_jobs_record_in_job_health():
    runs = recorded_runs()
    assert set(runs) == {"sensor_training", "sensor_predict"}
    assert defaults().health_measurement == JOB_HEALTH
    # The brief's fields, every one written by the scoring job (training has no anomalies to count).
    assert runs["sensor_predict"] >= JOB_HEALTH_FIELDS
    assert JOB_HEALTH_FIELDS - {"anomalies"} <= runs["sensor_training"]
    written = set().union(*runs.values())
    assert '{"job": job, "host": host}' in (ROOT / "influx_interact.py").read_text(encoding="utf-8")
    chronograf_names = {
        n for _, q in chronograf_queries(chronograf()) if f'"{JOB_HEALTH}"' in q for n in identifiers(q)
    }
    grafana_names = {
        n for _, q in grafana_queries(grafana_dashboard()) if f'"{JOB_HEALTH}"' in q for n in flux_fields(q)
    }
    for names in (chronograf_names, grafana_names):
        unknown = names - written - JOB_HEALTH_TAGS - {JOB_HEALTH, bucket(), "autogen", "_time", "_value"}
        assert not unknown, f"the dashboards read {sorted(unknown)}, which no job writes"
    jobs = set(re.findall(r'r\.job == "(\w+)"', " ".join(q for _, q in grafana_queries(grafana_dashboard()))))
    assert jobs == set(runs)
