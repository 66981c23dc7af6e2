"""Training on a Dask cluster (a dask.distributed LocalCluster here) through joblib's Dask backend."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import ROOT, run_job

from tools import local_influxd, sensor_data

distributed = pytest.importorskip("dask.distributed")
NOW = pd.Timestamp("2026-03-01T00:00:00Z")


def test_training_runs_on_a_dask_cluster(influxd, database, tmp_path):
    index = pd.date_range(NOW - pd.Timedelta(days=3), NOW, freq="15min", inclusive="left")
    lines = []
    for sensor_id in ("dask one", "dask two"):
        lines += sensor_data.readings_lines(sensor_id, index, sensor_data.normal_readings(sensor_id, index, 4))
    local_influxd.write(influxd.url, database, lines)
    (tmp_path / "ratios.json").write_text("{}")
    (tmp_path / "windows.json").write_text("{}")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env={"PYTHONPATH": str(ROOT)}
    ) as cluster:
        args = [
            "--now",
            NOW.isoformat(),
            "--start=-3d",
            "--units",
            "8",
            "--epochs",
            "2",
            "--seed",
            "1",
            "--dask-scheduler",
            cluster.scheduler_address,
            "--models-dir",
            str(tmp_path / "models"),
            "--ratios",
            str(tmp_path / "ratios.json"),
            "--windows",
            str(tmp_path / "windows.json"),
        ]
        result = run_job("sensor_training.py", args, {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}, tmp_path)
        with distributed.Client(cluster) as client:
            tasks_run = sum(client.run(lambda dask_worker: len(dask_worker.state.log)).values())
    assert result.returncode == 0, result.stderr
    assert f"training on the Dask cluster at {cluster.scheduler_address}" in result.stderr
    assert "2 trained, 0 skipped, 0 failed" in result.stderr
    trained = {json.loads(p.read_text())["sensor_id"] for p in (tmp_path / "models").glob("*/metadata.json")}
    assert trained == {"dask one", "dask two"}
    assert tasks_run > 0  # the workers, not the job's own process, did the work
