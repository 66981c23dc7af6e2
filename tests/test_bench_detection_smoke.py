"""The detection benchmark runs end to end at a tiny size and ends with its JSON line (no figure is judged)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_detection_runs_and_reports_every_kind_and_method(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_detection.py"),
            "--quick",
            "--days",
            "10",
            "--holdout-days",
            "5",
            "--epochs",
            "1",
            "--history",
            "96",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == {"daily", "noisy", "drift", "flat", "all"}
    for kind, table in report["results"].items():
        assert set(table) == {"percentile K=1", "percentile K=2", "percentile K=3", "dynamic K=1"}, kind
        assert table["percentile K=1"]["events"] == (12 if kind == "all" else 3), kind
    assert "percentile K=1 against dynamic K=1:" in result.stdout
