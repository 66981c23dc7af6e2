"""The scoring benchmarks run end to end at a tiny size and end with their JSON line (no timing is judged)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

SENSORS, BIG = 6, 10


def test_bench_predict_runs_and_reports_every_scenario(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_predict.py"),
            "--quick",
            "--sensors",
            str(SENSORS),
            "--big",
            str(BIG),
            "--epochs",
            "1",
            "--workdir",
            str(tmp_path / "bench"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("scenario"), result.stdout
    report = json.loads(lines[-1])

    expected = {
        "tick": (SENSORS, SENSORS),
        "tick_keras": (SENSORS, SENSORS),
        "catchup": (SENSORS, SENSORS * 96),
        "tick_big": (BIG, BIG),
    }
    for name, (sensors, windows) in expected.items():
        figures = report[name]
        assert (figures["sensors"], figures["windows"]) == (sensors, windows), name
        assert figures["wall_s"] > 0 and figures["peak_rss_mb"] > 0, name
    assert report["tick"]["keras_ratio"] > 0
    assert report["floor"]["requests"] > 0 and report["floor"]["wall_s"] > 0
    assert report["tick"]["floor_ratio"] > 0 and report["catchup"]["floor_ratio"] > 0
    assert report["floor_catchup"]["requests"] > 0  # the catch-up's own floor
    assert report["catchup"]["floor_ratio"] == round(report["catchup"]["wall_s"] / report["floor_catchup"]["wall_s"], 2)
    assert report["floor_big"]["requests"] > 0 and report["tick_big"]["floor_ratio"] > 0  # the big tick's own floor
    assert report["catchup"]["tick_ratio"] > 0
    assert report["tick_keras"]["engine"] == "keras" and report["tick"]["engine"] == "numpy"
    assert report["models"] == {
        "trained": 4,
        "derived": SENSORS - 4,
        "derived_numpy_only": BIG - SENSORS,
        "perturbation": 0.01,
    }
    assert report["max_loss_difference"] <= 1e-3


def test_bench_forward_runs_both_ways_and_reports_them(capsys):
    """bench/bench_forward.py: both ways timed, same losses (it raises otherwise), and its JSON line."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_forward

    assert bench_forward.main(["--sensors", "30", "--windows", "2", "--chunk-size", "8", "--repeats", "2"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (report["sensors"], report["windows"]) == (30, 2)
    assert len(report["stacked"]) == len(report["sliced"]) == 2 and report["ratio"] > 0
