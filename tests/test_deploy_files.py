"""Checks of the deployment files: Dockerfile, .dockerignore, docker-compose.yml and deploy/.

No Docker engine runs where these tests run (nor systemd as PID 1, nor cron), so nothing here
builds an image, starts a container or enables a unit. The files are parsed instead and checked
against each other and against the code: compose services, images, ports, variables and volumes;
the Dockerfile's base image, user and copied files; the sections and keys of the systemd units; the
crontab's fields; and every flag on a job's command line goes through that job's own argparse
parser. deploy/container-schedule.sh is the one file that runs for real, with a stand-in for
Python, to check the order of the jobs, that they never overlap and that a stop signal is obeyed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The job scripts live at the repository root, which pytest does not put on sys.path by itself.
sys.path.insert(0, str(ROOT))

import sensor_predict  # noqa: E402
import sensor_training  # noqa: E402
from anomaly import errors, runner  # noqa: E402

DEPLOY = ROOT / "deploy"
SCHEDULER = DEPLOY / "container-schedule.sh"
INSTALL_DIR = "/opt/sensor-anomaly"
ENV_FILE = "/etc/sensor-anomaly/env"
JOBS = {"sensor_training.py": sensor_training, "sensor_predict.py": sensor_predict}
UNIT_SCRIPTS = {"sensor-training": "sensor_training.py", "sensor-predict": "sensor_predict.py"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


# ------------------------------------------------------------------ helpers


def job_invocation(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The job script named in a command and the arguments after it, up to a shell operator."""
    for i, token in enumerate(tokens):
        if Path(token).name in JOBS:
            args = []
            for arg in tokens[i + 1 :]:
                if arg in SHELL_OPERATORS:
                    break
                args.append(arg)
            return token, args
    return None


def shell_words(command: str) -> list[str]:
    """Split a shell command into words, with && ; | as words of their own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def simple_commands(command: str) -> list[list[str]]:
    """``a && b; c`` -> [[a], [b], [c]]."""
    commands: list[list[str]] = [[]]
    for word in shell_words(command):
        if word in SHELL_OPERATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


@pytest.fixture
def job_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A complete connection in the environment, as the env file or compose would provide it."""
    for name in ("INFLUX_DATABASE", "INFLUX_USERNAME", "INFLUX_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFLUX_URL", "http://influxdb.invalid:8086")
    monkeypatch.setenv("INFLUX_TOKEN", "token")
    monkeypatch.setenv("INFLUX_ORG", "org")
    monkeypatch.setenv("INFLUX_BUCKET", "bucket")


def check_job_args(script: str, args: list[str], where: str) -> None:
    """Fail unless the job's parser accepts the arguments and its settings accept the values."""
    module = JOBS[Path(script).name]
    try:
        parsed = module.JOB.parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{where}: {Path(script).name} rejects {args} (argparse exit {e.code}; see stderr)")
    try:
        module.JOB.settings(parsed)
    except errors.ConfigError as e:
        pytest.fail(f"{where}: {Path(script).name} {args}: {e}")


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}}; fails on lines outside the INI shape."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None, f"{path.name}:{number}: {line!r} comes before any [Section]"
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), (
            f"{path.name}:{number}: {line!r} is not Key=value"
        )
        current.setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path.name}: ends inside a continued line"
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str, name: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"{name}: [{section}] needs exactly one {key}=, has {values}"
    return values[0]


def split_flock(words: list[str]) -> tuple[list[str], str, list[str]]:
    """``flock OPTIONS LOCKFILE COMMAND...`` -> (options, lock file, command)."""
    assert Path(words[0]).name == "flock", f"{words} does not start with flock"
    options, i = [], 1
    while words[i].startswith("-"):
        takes_value = words[i] in ("-E", "--conflict-exit-code", "-w", "--timeout")
        options += words[i : i + 1 + takes_value]
        i += 1 + takes_value
    return options, words[i], words[i + 1 :]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def environment(service: dict) -> dict[str, str]:
    """A service's environment in either compose form (mapping, or list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def container_ports(service: dict) -> set[int]:
    ports = set()
    for port in service.get("ports") or []:
        ports.add(int(port["target"]) if isinstance(port, dict) else int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def named_volumes(service: dict) -> dict[str, str]:
    """{volume name: mount path} for the named volumes a service mounts (bind mounts left out)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume":
                mounts[volume["source"]] = volume["target"]
            continue
        source, _, rest = str(volume).partition(":")
        if rest and not source.startswith(("/", ".", "~", "$")):
            mounts[source] = rest.split(":")[0]
    return mounts


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def compose_variables() -> list[tuple[str, str | None, str | None]]:
    """Every ``${NAME...}`` compose interpolates, as (name, operator, argument), comments left out."""
    found = []
    for line in (ROOT / "docker-compose.yml").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        line = line.replace("$$", "")
        found += [(m["name"], m["op"], m["arg"]) for m in _INTERPOLATION.finditer(line)]
        assert "$" not in _INTERPOLATION.sub("", line), (
            f"docker-compose.yml: use ${{NAME:-default}}, not $NAME: {line!r}"
        )
    return found


def documented_variables() -> set[str]:
    """Names in deploy/env.example, set or commented out."""
    text = (DEPLOY / "env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, rest = (current + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def exec_form_or_words(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    result = []
    for keyword, arguments in dockerfile():
        if keyword not in ("COPY", "ADD"):
            continue
        words = exec_form_or_words(arguments)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        result.append((words[:-1], words[-1]))
    return result


def dockerignore() -> list[tuple[bool, re.Pattern]]:
    """(is an exception, regex) for each pattern of .dockerignore, in order."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().lstrip("/").removeprefix("./").rstrip("/")
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", pattern)
        )
        rules.append((negated, re.compile(regex.replace(".*/", "(?:.*/)?"))))
    return rules


def ignored(relative: str) -> bool:
    """Docker's rule: a pattern matching a path or any of its parent directories excludes it; last match wins."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negated, regex in dockerignore():
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negated
    return result


def crontab_jobs() -> list[tuple[list[str], str]]:
    """(five time fields, command) for each job line; variable lines and comments left out."""
    jobs = []
    for raw in (DEPLOY / "crontab").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"crontab: {line!r} is not five time fields and a command"
        jobs.append((fields[:5], fields[5]))
    return jobs


def job_command(words: list[str]) -> list[str]:
    """The simple command that runs flock, without a leading exec."""
    return words[1:] if words[0] == "exec" else words


# ------------------------------------------------------------------ docker-compose.yml


def test_compose_services_images_and_ports():
    services = compose()["services"]
    assert {"influxdb", "chronograf", "app"} <= set(services)
    assert services["influxdb"]["image"] == "influxdb:2.7"
    assert services["chronograf"]["image"] == "chronograf:1.10"
    assert 8086 in container_ports(services["influxdb"])
    assert 8888 in container_ports(services["chronograf"])


def test_compose_influxdb_setup_and_healthcheck():
    influxdb = compose()["services"]["influxdb"]
    env = environment(influxdb)
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env.get(f"DOCKER_INFLUXDB_INIT_{key}"), f"influxdb: DOCKER_INFLUXDB_INIT_{key} is not set"
    test = influxdb["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else test
    assert "localhost:8086/health" in command, command
    assert "/var/lib/influxdb2" in named_volumes(influxdb).values()


def test_compose_chronograf_and_app_use_what_influxdb_was_set_up_with():
    services = compose()["services"]
    setup = environment(services["influxdb"])
    chronograf, app = environment(services["chronograf"]), environment(services["app"])
    assert chronograf["INFLUXDB_URL"] == "http://influxdb:8086"
    assert chronograf["INFLUXDB_TOKEN"] == setup["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert chronograf["INFLUXDB_ORG"] == setup["DOCKER_INFLUXDB_INIT_ORG"]
    assert app["INFLUX_URL"] == "http://influxdb:8086"
    assert app["INFLUX_TOKEN"] == setup["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert app["INFLUX_ORG"] == setup["DOCKER_INFLUXDB_INIT_ORG"]
    assert app["INFLUX_BUCKET"] == setup["DOCKER_INFLUXDB_INIT_BUCKET"]
    for name in ("chronograf", "app"):
        assert services[name]["depends_on"]["influxdb"]["condition"] == "service_healthy", name


def test_compose_app_names_only_variables_the_jobs_read():
    read = set(re.findall(r'env\("([A-Z_]+)"', (ROOT / "anomaly" / "connection.py").read_text(encoding="utf-8")))
    influx = {name for name in environment(compose()["services"]["app"]) if name.startswith("INFLUX_")}
    assert {"INFLUX_URL", "INFLUX_TOKEN", "INFLUX_ORG", "INFLUX_BUCKET"} <= influx
    assert influx <= read, f"anomaly/connection.py reads none of {sorted(influx - read)}"


def test_compose_app_is_built_here_and_keeps_models_and_state_in_the_image_volumes():
    app = compose()["services"]["app"]
    build = app["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (context / dockerfile_name).is_file()
    volumes = [a for k, a in dockerfile() if k == "VOLUME"]
    declared = {path for a in volumes for path in exec_form_or_words(a)}
    assert set(named_volumes(app).values()) & declared == {"/app/models", "/app/state"}


def test_compose_top_level_volumes_are_exactly_the_ones_used():
    document = compose()
    used = {name for service in document["services"].values() for name in named_volumes(service)}
    assert set(document.get("volumes") or {}) == used


def test_compose_variables_have_a_default_or_are_documented():
    documented = documented_variables()
    defaults: dict[str, set[str]] = {}
    variables = compose_variables()
    assert variables, "docker-compose.yml interpolates no variable; the test would check nothing"
    for name, op, arg in variables:
        if op in (":-", "-"):
            defaults.setdefault(name, set()).add(arg)
        else:
            assert name in documented, f"${{{name}}} has no default and is not in deploy/env.example"
    # One default per name: otherwise the app could default to another token than InfluxDB was set up with.
    assert all(len(values) == 1 for values in defaults.values()), defaults


def test_compose_job_flags_are_accepted(job_env):
    app = compose()["services"]["app"]
    env = environment(app)
    # The scheduler splits these on blanks, without shell quoting; so does this test.
    check_job_args("sensor_training.py", env["TRAINING_ARGS"].split(), "docker-compose.yml TRAINING_ARGS")
    check_job_args("sensor_predict.py", env["PREDICT_ARGS"].split(), "docker-compose.yml PREDICT_ARGS")
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command:
            found = job_invocation(command if isinstance(command, list) else shlex.split(command))
            if found:
                check_job_args(*found, f"docker-compose.yml {name} command")


# ------------------------------------------------------------------ Dockerfile and .dockerignore


def test_dockerfile_base_user_and_requirements():
    instructions = dockerfile()
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    user = [a for k, a in instructions if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), f"last USER is {user}"
    runs = [(i, a) for i, (k, a) in enumerate(instructions) if k == "RUN"]
    assert any(re.search(rf"useradd\b[^&;|]*\s{re.escape(user[-1])}(\s|$)", a) for _, a in runs), (
        f"no RUN useradd creates user {user[-1]!r}"
    )
    pip = [i for i, a in runs if re.search(r"pip install\b.*-r requirements\.txt", a)]
    copied = [i for i, (k, a) in enumerate(instructions) if k == "COPY" and "requirements.txt" in a.split()]
    assert pip and copied and copied[0] < pip[0], "requirements.txt must be copied, then pip install -r it"
    assert keywords.index("USER") > pip[0], "install as root, run as the user"


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored():
    for sources, _ in copies():
        for source in sources:
            matches = [ROOT] if source == "." else sorted(ROOT.glob(source))
            assert matches, f"Dockerfile: COPY {source} matches no file"
            files = [p for m in matches for p in ([m] if m.is_file() else m.rglob("*")) if p.is_file()]
            kept = [p for p in files if not ignored(p.relative_to(ROOT).as_posix())]
            assert kept, f"Dockerfile: COPY {source}: .dockerignore leaves nothing of it in the context"


def image_files() -> set[str]:
    """Repository paths that end up in the image (the destinations are relative to WORKDIR)."""
    found = set()
    for sources, _ in copies():
        for source in sources:
            for match in [ROOT] if source == "." else ROOT.glob(source):
                for path in [match] if match.is_file() else match.rglob("*"):
                    relative = path.relative_to(ROOT).as_posix()
                    if path.is_file() and not ignored(relative):
                        found.add(relative)
    return found


def test_image_holds_every_module_the_config_defaults_and_the_scheduler():
    files = image_files()
    modules = {p.name for p in ROOT.glob("*.py")} | {
        p.relative_to(ROOT).as_posix() for p in ROOT.glob("anomaly/**/*.py")
    }
    assert modules <= files, f"not copied: {sorted(modules - files)}"
    defaults = sensor_predict.JOB.parser().parse_args([])
    for path in (defaults.ratios, defaults.windows):
        assert path.relative_to(ROOT).as_posix() in files
    command = [exec_form_or_words(a) for k, a in dockerfile() if k == "CMD"][-1]
    assert "deploy/container-schedule.sh" in command and "deploy/container-schedule.sh" in files


def test_dockerfile_models_volume_is_the_jobs_default_models_dir():
    instructions = dockerfile()
    workdir = [a for k, a in instructions if k == "WORKDIR"][-1]
    volumes = {p for k, a in instructions if k == "VOLUME" for p in exec_form_or_words(a)}
    default = sensor_training.JOB.parser().parse_args([]).models_dir
    assert f"{workdir}/{default.relative_to(ROOT).as_posix()}" in volumes
    user = [a for k, a in instructions if k == "USER"][-1]
    assert any(k == "RUN" and f"chown {user}:{user} {workdir}/models" in a for k, a in instructions), (
        "the models directory must belong to the job user before VOLUME"
    )


def predict_state_dir(monkeypatch: pytest.MonkeyPatch, state_directory: str) -> Path:
    """Where sensor_predict.py keeps its state file with $STATE_DIRECTORY as a deployment sets it."""
    monkeypatch.setenv("STATE_DIRECTORY", state_directory)
    settings = sensor_predict.JOB.settings(sensor_predict.JOB.parser().parse_args([]))
    assert settings.rescore_file.parent == settings.alerts.state_file.parent
    return settings.alerts.state_file.parent


def test_the_image_keeps_the_scoring_state_in_a_volume_of_its_own(job_env, monkeypatch):
    """Issue 11: the state was kept in the models directory, which scorers may use read-only. In the image it goes
    to STATE_DIRECTORY, a volume the job user owns and compose mounts, so a rebuilt container sends nothing twice."""
    instructions = dockerfile()
    env = dict(word.split("=", 1) for k, a in instructions if k == "ENV" for word in shlex.split(a))
    state = env["STATE_DIRECTORY"]
    volumes = {p for k, a in instructions if k == "VOLUME" for p in exec_form_or_words(a)}
    user = [a for k, a in instructions if k == "USER"][-1]
    assert state in volumes and state != "/app/models"
    assert any(k == "RUN" and re.search(rf"chown {user}:{user} .*{state}\b", a) for k, a in instructions)
    assert state in named_volumes(compose()["services"]["app"]).values()
    assert predict_state_dir(monkeypatch, state) == Path(state)


@pytest.mark.parametrize(
    "path, excluded",
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        (".env", True),
        ("models/a-0123456789ab/metadata.json", True),
        ("tests/__pycache__/test_deploy_files.cpython-311.pyc", True),
        (".pytest_cache/README.md", True),
        (".hypothesis/examples/x", True),
        (".venv-mut/bin/python", True),
        ("mutants/anomaly/detect.py", True),
        ("sensor_predict.py", False),
        ("deploy/container-schedule.sh", False),
        ("requirements.txt", False),
    ],
)
def test_dockerignore(path, excluded):
    assert ignored(path) is excluded


# ------------------------------------------------------------------ systemd units


@pytest.mark.parametrize("unit_name", sorted(UNIT_SCRIPTS))
def test_service_unit(unit_name, job_env):
    path = DEPLOY / f"{unit_name}.service"
    unit = read_unit(path)
    assert set(unit) <= {"Unit", "Service", "Install"}, set(unit)
    assert one(unit, "Unit", "Description", path.name)
    assert one(unit, "Service", "Type", path.name) == "oneshot"
    assert one(unit, "Service", "EnvironmentFile", path.name) == ENV_FILE
    assert one(unit, "Service", "WorkingDirectory", path.name) == INSTALL_DIR
    assert one(unit, "Service", "User", path.name) not in ("root", "0")
    exec_start = one(unit, "Service", "ExecStart", path.name)
    assert "%" not in exec_start, "systemd expands % specifiers in ExecStart"
    options, lock, command = split_flock(shlex.split(exec_start.lstrip("-@:+!")))
    assert exec_start.startswith("/usr/bin/flock ") and "-n" in options
    assert lock == f"/run/lock/{unit_name}.lock"
    if "-E" in options:  # a lock conflict's exit code must not leave the unit failed
        code = options[options.index("-E") + 1]
        assert code in one(unit, "Service", "SuccessExitStatus", path.name).split()
    assert command[0] == f"{INSTALL_DIR}/.venv/bin/python"
    script, args = job_invocation(command)
    assert script == f"{INSTALL_DIR}/{UNIT_SCRIPTS[unit_name]}" and (ROOT / Path(script).name).is_file()
    check_job_args(script, args, path.name)


def test_systemd_and_cron_keep_the_scoring_state_in_one_directory_outside_the_models(job_env, monkeypatch):
    """systemd's StateDirectory= sets $STATE_DIRECTORY to /var/lib/<name>; the crontab sets the same, so a host
    that moves from one to the other remembers its events; the job keeps its state there."""
    unit = read_unit(DEPLOY / "sensor-predict.service")
    directory = "/var/lib/" + one(unit, "Service", "StateDirectory", "sensor-predict.service")
    variables = dict(
        re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line.strip()).groups()
        for line in (DEPLOY / "crontab").read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=", line)
    )
    assert variables.get("STATE_DIRECTORY") == directory, "deploy/crontab must set the unit's state directory"
    assert predict_state_dir(monkeypatch, directory) == Path(directory)


@pytest.mark.parametrize(
    "unit_name, on_calendar",
    [
        ("sensor-training", {"monthly", "*-*-01 00:00:00"}),
        ("sensor-predict", {"*:0/5", "*:00/5", "*-*-* *:00/5:00"}),
    ],
)
def test_timer_unit(unit_name, on_calendar):
    path = DEPLOY / f"{unit_name}.timer"
    unit = read_unit(path)
    assert set(unit) <= {"Unit", "Timer", "Install"}, set(unit)
    assert one(unit, "Unit", "Description", path.name)
    assert one(unit, "Timer", "OnCalendar", path.name) in on_calendar
    service = unit["Timer"].get("Unit", [f"{unit_name}.service"])[0]
    assert (DEPLOY / service).is_file() and service == f"{unit_name}.service"
    assert one(unit, "Install", "WantedBy", path.name) == "timers.target"
    # README: both timers catch up a run missed while the machine was off (Issue 11: scoring's did not).
    assert one(unit, "Timer", "Persistent", path.name) == "true"
    if unit_name == "sensor-training":
        assert one(unit, "Timer", "RandomizedDelaySec", path.name)


@pytest.mark.parametrize("unit_name", sorted(UNIT_SCRIPTS))
def test_a_run_started_by_hand_finds_the_lock_of_the_units_run(unit_name, monkeypatch):
    """README: a job's own lock makes a second run exit "even when started by hand beside the timer". Issue 11:
    with PrivateTmp=true the unit's run had a /tmp of its own, and the lock there was invisible outside it."""
    job = JOBS[UNIT_SCRIPTS[unit_name]].JOB
    assert job.lock, f"{job.name} takes no lock: nothing to check"
    for name in ("TMPDIR", "TEMP", "TMP"):  # neither the unit nor its EnvironmentFile sets one (checked below)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)
    lock = runner.lock_path(Path(INSTALL_DIR) / "models", job.name)
    service = read_unit(DEPLOY / f"{unit_name}.service")["Service"]
    private = service.get("PrivateTmp", ["false"])[-1].lower() in ("true", "yes", "on", "1")
    hidden = [d for d in ("/tmp", "/var/tmp") if private and lock.is_relative_to(d)]
    assert not hidden, f"{unit_name}.service: PrivateTmp hides {hidden[0]}, where {job.name} keeps its lock {lock}"
    moved = [
        n for n in ("TMPDIR", "TEMP", "TMP") if n in documented_variables() or n in str(service.get("Environment"))
    ]
    assert not moved, f"{moved[0]} would move the lock of the unit's runs only"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units():
    units = sorted(str(p) for p in DEPLOY.glob("sensor-*.*") if p.suffix in (".service", ".timer"))
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=8)
    # verify also reports the host's own units; only lines about ours count.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "sensor-" in line]
    assert not ours, "\n".join(ours)


# ------------------------------------------------------------------ crontab


_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def test_crontab_lines(job_env):
    jobs = crontab_jobs()
    scripts = {}
    for fields, command in jobs:
        for field, (low, high) in zip(fields, _CRON_RANGES):
            assert re.fullmatch(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*", field), f"bad cron field {field!r}"
            assert all(low <= int(n) <= high for n in re.findall(r"(?<!/)\d+", field)), f"{field!r} out of range"
        assert "%" not in command, "cron turns % into a newline"
        commands = simple_commands(command)
        assert ["cd", INSTALL_DIR] in commands
        assert [".", ENV_FILE] in commands and ["set", "-a"] in commands
        assert commands.index(["set", "-a"]) < commands.index([".", ENV_FILE]), "set -a must come before sourcing"
        flock = job_command(commands[-1])
        options, lock, rest = split_flock(flock)
        assert "-n" in options
        assert rest[0] in (".venv/bin/python", f"{INSTALL_DIR}/.venv/bin/python"), rest[0]
        script, args = job_invocation(rest)
        assert (ROOT / script).is_file(), script
        unit = {v: k for k, v in UNIT_SCRIPTS.items()}[script]
        assert lock == f"/run/lock/{unit}.lock", "cron and systemd must share the lock file"
        check_job_args(script, args, "deploy/crontab")
        scripts[script] = fields
    assert scripts.keys() == set(JOBS)
    assert scripts["sensor_predict.py"] == ["*/5", "*", "*", "*", "*"]
    minute, hour, day, month, weekday = scripts["sensor_training.py"]
    assert minute.isdigit() and hour.isdigit() and (day, month, weekday) == ("1", "*", "*")


# ------------------------------------------------------------------ env.example


def test_env_example_documents_what_the_jobs_and_compose_read():
    text = (DEPLOY / "env.example").read_text(encoding="utf-8")
    documented = documented_variables()
    read = set(re.findall(r'env\("([A-Z_]+)"', (ROOT / "anomaly" / "connection.py").read_text(encoding="utf-8")))
    assert read, "found no env(...) in anomaly/connection.py; the test would check nothing"
    assert read <= documented, f"not in env.example: {sorted(read - documented)}"
    unknown = documented - read - {name for name, _, _ in compose_variables()}
    assert not unknown, f"env.example names variables nothing reads: {sorted(unknown)}"
    assert "chmod 600" in text and "never commit" in text


# ------------------------------------------------------------------ container-schedule.sh


def test_scheduler_is_valid_posix_shell():
    result = subprocess.run(["sh", "-n", str(SCHEDULER)], capture_output=True, text=True, timeout=5)
    assert result.returncode == 0, result.stderr


def test_scheduler_job_flags_are_accepted(job_env):
    found = []
    for line in SCHEDULER.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not any(script in line for script in JOBS):
            continue
        script, args = job_invocation(shlex.split(line))
        # Variables stand for a path ("$models_dir"); a whole-word variable is the extra flags,
        # which test_compose_job_flags_are_accepted checks.
        args = [re.sub(r"\$\{?\w+\}?", "/tmp/x", a) for a in args if not re.fullmatch(r"\$\{?\w+\}?", a)]
        check_job_args(script, args, SCHEDULER.name)
        found.append(script)
    assert sorted(found) == sorted(JOBS)


FAKE_PYTHON = """#!/bin/sh
echo "start $*" >>"$FAKE_LOG"
echo "$1 says hello" >&2
if [ -n "${FAKE_HANG:-}" ]; then
    echo "pid $$" >>"$FAKE_LOG"
    exec sleep 30
fi
sleep 0.1
echo "end $1" >>"$FAKE_LOG"
"""


def start_scheduler(tmp_path: Path, stamp: str | None, models: bool, **env: str) -> tuple[subprocess.Popen, Path, Path]:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    if models:
        (models_dir / "s-0123456789ab").mkdir()
        (models_dir / "s-0123456789ab" / "metadata.json").write_text("{}")
    if stamp is not None:
        (models_dir / ".last-training-month").write_text(stamp + "\n")
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "jobs.log"
    log.touch()
    process = subprocess.Popen(
        ["sh", str(SCHEDULER)],
        env=dict(
            os.environ, PYTHON=str(fake), MODELS_DIR=str(models_dir), PREDICT_EVERY_S="1", FAKE_LOG=str(log), **env
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, log, models_dir


def wait_for(log: Path, line: str, count: int, process: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        if sum(1 for x in lines if x.startswith(line)) >= count:
            return lines
        assert process.poll() is None, f"scheduler exited with {process.returncode}: {process.communicate()}"
        time.sleep(0.02)
    pytest.fail(f"no {count} x {line!r} in 5 s: {log.read_text()!r}")


def stop(process: subprocess.Popen) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the scheduler did not stop within 3 s of SIGTERM")
    return process.returncode, out, err


def this_month() -> str:
    return time.strftime("%Y-%m", time.gmtime())


@pytest.mark.parametrize(
    "models, stamp, trains, ticks",
    [
        (False, None, True, 2),  # first start; the second tick must not train again
        (False, "current", True, 1),  # no model although trained this month: the last run found no data
        (True, "2000-01", True, 1),  # a month went by (also while the container was down)
        (True, "current", False, 1),  # trained this month already
        (True, None, False, 1),  # models from before the scheduler count as this month's
    ],
)
def test_scheduler_trains_when_due_then_predicts_on_every_tick(tmp_path, models, stamp, trains, ticks):
    process, log, models_dir = start_scheduler(
        tmp_path,
        this_month() if stamp == "current" else stamp,
        models,
        TRAINING_ARGS="--start=-30d  --sensor a*",
        PREDICT_ARGS="--dry-run",
    )
    try:
        # One more start than the ticks checked: the scheduler logs a job's end before it starts the next, so
        # stopping it then never races the last checked job's "finished" line.
        lines = wait_for(log, "start sensor_predict.py", ticks + 1, process)
    finally:
        code, out, err = stop(process)
    starts = [x for x in lines if x.startswith("start")]
    predict = f"start sensor_predict.py --models-dir={models_dir} --dry-run"
    # a* reaching the job unexpanded shows the flags are split but not globbed (artifacts.py is at hand).
    training = f"start sensor_training.py --models-dir={models_dir} --start=-30d --sensor a*"
    assert starts[: trains + ticks] == [training] * trains + [predict] * ticks
    assert training not in starts[1:], "trained twice"
    # Every job ends before the next starts.
    for first, second in zip(lines[::2], lines[1::2]):
        assert first.startswith("start ") and second == "end " + first.split()[1]
    assert (models_dir / ".last-training-month").read_text().strip() == this_month()
    assert code == 143
    # The jobs' own logs (stderr) come out on the scheduler's stdout, in order with its lines.
    assert "sensor_predict.py says hello" in out and "prediction: finished with exit status 0" in out
    assert ("training: starting" in out) is trains
    assert err == ""


def test_scheduler_stops_a_running_job_on_sigterm(tmp_path):
    process, log, _ = start_scheduler(tmp_path, this_month(), True, FAKE_HANG="1")
    try:
        lines = wait_for(log, "pid ", 1, process)
    finally:
        began = time.monotonic()
        code, out, _ = stop(process)
    pid = int(next(x for x in lines if x.startswith("pid ")).split()[1])
    try:
        assert code == 143 and time.monotonic() - began < 2
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # only if the scheduler left its job behind
    assert "stopping" in out
