"""anomaly/store.py: directory names per sensor id, and the save / load life cycle with a fake model."""

import hashlib
import json
import re
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from anomaly import store as artifacts
from anomaly.metadata import ArtifactError, ModelMetadata

# ---------------------------------------------------------------- sensor_dir


def test_sensor_dir_unique_for_ids_differing_in_punctuation(tmp_path):
    ids = ["a b", "a_b", "a/b", "a-b", "a.b", "a  b", "_a_b_", "A b", "a\\b"]
    names = [artifacts.sensor_dir(tmp_path, i).name for i in ids]
    assert len(set(names)) == len(ids), names
    assert names[0].startswith("a_b-") and names[3].startswith("a-b-")


def test_sensor_dir_is_deterministic(tmp_path):
    assert artifacts.sensor_dir(tmp_path, "Température") == artifacts.sensor_dir(tmp_path, "Température")


@pytest.mark.parametrize(
    "sensor_id, readable",
    [
        ("s1", "s1"),
        ("../../etc", "etc"),
        ("", "sensor"),
        (".", "sensor"),
        ("..", "sensor"),
        ("/", "sensor"),
        (".hidden", "hidden"),
        ("Température", "Temp_rature"),
        ("日本語", "sensor"),
        ("a\nb", "a_b"),
        ("x" * 1000, "x" * 48),
        ("Campus Energy Centre/AHU-1:SAT", "Campus_Energy_Centre_AHU-1_SAT"),
    ],
)
def test_sensor_dir_is_safe(tmp_path, sensor_id, readable):
    path = artifacts.sensor_dir(tmp_path, sensor_id)
    digest = hashlib.sha256(sensor_id.encode("utf-8")).hexdigest()[:12]
    assert path.parent == tmp_path
    assert path.name == f"{readable}-{digest}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,61}", path.name)
    assert not path.name.startswith(".")


# ---------------------------------------------------------------- save and load


class FakeModel:
    """Stands in for a Keras model: anything with save(path)."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.payload)


class FailingModel:
    """Writes half a file, then fails, as a full disk would."""

    def save(self, path: Path) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")


def scaler(values: list[float]) -> StandardScaler:
    return StandardScaler().fit(np.array(values).reshape(-1, 1))


def weights(n: int, units: int = 2) -> dict:
    """A complete, consistent set of weights whose values carry the version n."""
    return {name: np.full(shape, float(n), dtype="float32") for name, shape in artifacts.weight_shapes(units).items()}


def metadata(trained_at: str) -> dict:
    return {
        "sensor_id": "s1",
        "window": 15,
        "interval_s": 900,
        "threshold": 0.5,
        "scaler": {"mean": 3.0, "scale": 1.0},
        "trained_at": trained_at,
    }


def save(directory: Path, n: int) -> dict:
    """Save version n (model bytes b'model-n', scaler mean n) and return the committed metadata."""
    artifacts.save(
        directory,
        FakeModel(f"model-{n}".encode()),
        scaler([n - 1, n + 1]),
        weights(n),
        metadata(f"2026-01-{n:02d}T00:00:00Z"),
    )
    return json.loads((directory / "metadata.json").read_text(encoding="utf-8"))


def files_of(record: dict) -> set[str]:
    return set(record["files"].values())


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_save_commits_metadata_with_checksums(tmp_path):
    directory = tmp_path / "models" / "s1"
    path = artifacts.save(
        directory, FakeModel(b"model-bytes"), scaler([1.0, 3.0, 5.0]), weights(1), metadata("2026-01-31T00:00:00Z")
    )
    assert path == directory / "metadata.json"
    text = path.read_text(encoding="utf-8")
    record = json.loads(text)
    assert text == json.dumps(record, indent=2, sort_keys=True) + "\n"
    version = record["version"]
    assert re.fullmatch(r"20260131T000000Z-[0-9a-f]{6}", version)
    assert record["files"] == {
        "model": f"model-{version}.keras",
        "scaler": f"scaler-{version}.joblib",
        "weights": f"weights-{version}.npz",
    }
    assert record["sha256"]["model"] == hashlib.sha256(b"model-bytes").hexdigest()
    assert (
        record["sha256"]["scaler"] == hashlib.sha256((directory / record["files"]["scaler"]).read_bytes()).hexdigest()
    )
    assert (record["format_version"], record["sensor_id"], record["window"], record["threshold"]) == (1, "s1", 15, 0.5)
    assert listing(directory) == {"metadata.json"} | files_of(record)

    loaded = artifacts.load(directory)
    assert loaded.paths == {key: directory / name for key, name in record["files"].items()}
    assert loaded.paths["model"].read_bytes() == b"model-bytes"
    assert joblib.load(loaded.paths["scaler"]).mean_.tolist() == [3.0]
    loaded_weights = artifacts.load_weights(loaded.paths["weights"], record["sha256"]["weights"])
    assert sorted(loaded_weights) == sorted(artifacts.WEIGHT_NAMES)
    assert loaded_weights["decoder_recurrent_kernel"].shape == (2, 8)
    assert (loaded_weights["output_bias"] == 1.0).all()
    assert loaded.metadata.threshold == 0.5


@pytest.mark.parametrize(
    "damage, match",
    [
        ("append to model", "model-.*: missing or damaged"),
        ("truncate scaler", "scaler-.*: missing or damaged"),
        ("delete model", "model-.*: missing or damaged"),
        ("metadata not JSON", "unreadable metadata"),
        ("metadata a list", "metadata is not a JSON object"),
        ("format version 2", "format version 2 is not 1"),
        ("no files named", "does not name the model, scaler, weights files"),
        ("no metadata", "^no model$"),
    ],
)
def test_load_metadata_rejects_damage(tmp_path, damage, match):
    record = save(tmp_path, 1)
    model, scaler_file = (tmp_path / record["files"][k] for k in ("model", "scaler"))
    meta = tmp_path / "metadata.json"
    if damage == "append to model":
        with open(model, "ab") as f:
            f.write(b"!")
    elif damage == "truncate scaler":
        scaler_file.write_bytes(scaler_file.read_bytes()[:10])
    elif damage == "delete model":
        model.unlink()
    elif damage == "metadata not JSON":
        meta.write_text('{"format_version": 1,')
    elif damage == "metadata a list":
        meta.write_text("[]")
    elif damage == "format version 2":
        meta.write_text(json.dumps(dict(record, format_version=2)))
    elif damage == "no files named":
        meta.write_text(json.dumps(dict(record, files={})))
    elif damage == "no metadata":
        meta.unlink()
    with pytest.raises(ArtifactError, match=match):
        artifacts.load(tmp_path)


def test_three_saves_keep_current_and_previous_only(tmp_path):
    first = save(tmp_path, 1)
    second = save(tmp_path, 2)
    assert listing(tmp_path) == {"metadata.json"} | files_of(first) | files_of(second)
    (tmp_path / ".metadata.json.killed-run.tmp").write_text("{")
    third = save(tmp_path, 3)
    assert listing(tmp_path) == {"metadata.json"} | files_of(second) | files_of(third)
    assert len({first["version"], second["version"], third["version"]}) == 3
    loaded = artifacts.load(tmp_path)
    assert loaded.metadata.record["version"] == third["version"]
    assert loaded.paths["model"].read_bytes() == b"model-3"
    # A scorer that read the previous metadata a moment ago can still open and verify its files.
    for key, name in second["files"].items():
        assert artifacts.sha256_file(tmp_path / name) == second["sha256"][key]


def test_failed_save_leaves_previous_version_loadable(tmp_path):
    save(tmp_path, 1)
    second = save(tmp_path, 2)
    with pytest.raises(OSError, match="disk full"):
        artifacts.save(tmp_path, FailingModel(), scaler([0.0, 1.0]), weights(3), metadata("2026-01-03T00:00:00Z"))
    loaded = artifacts.load(tmp_path)
    assert loaded.metadata.record["version"] == second["version"]
    assert loaded.paths["model"].read_bytes() == b"model-2"
    assert joblib.load(loaded.paths["scaler"]).mean_.tolist() == [2.0]
    # The next good save clears the half-written file.
    fourth = save(tmp_path, 4)
    assert listing(tmp_path) == {"metadata.json"} | files_of(second) | files_of(fourth)


def test_save_replaces_damaged_metadata(tmp_path):
    save(tmp_path, 1)
    (tmp_path / "metadata.json").write_text('{"format_version": 1,')
    record = save(tmp_path, 2)
    assert artifacts.load(tmp_path).metadata.record["version"] == record["version"]


def test_load_weights_refuses_a_damaged_file(tmp_path):
    record = save(tmp_path, 1)
    path = tmp_path / record["files"]["weights"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"weights-.*: missing or damaged"):
        artifacts.load_weights(path, record["sha256"]["weights"])


@pytest.mark.parametrize("threshold", [0, 0.0, -0.5])
def test_a_threshold_that_cannot_score_is_refused_with_the_sensor_named(threshold):
    # A score is loss / threshold: a threshold of 0 would write inf (or NaN) on every point.
    record = {
        "sensor_id": "s1",
        "window": 15,
        "interval_s": 900,
        "threshold": threshold,
        "scaler": {"mean": 0, "scale": 1},
    }
    with pytest.raises(
        ArtifactError, match=f"metadata.json has threshold {threshold!r}; retrain this sensor"
    ) as raised:
        ModelMetadata.from_record(record)
    assert raised.value.sensor_id == "s1"
