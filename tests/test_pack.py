"""anomaly/pack.py and anomaly/pack_build.py: the packed model store is a faithful, checked copy of the
per-sensor files, and a sensor whose files changed since it was packed is never read from the pack."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

import model_predict
from anomaly import pack, pack_build, store
from anomaly.metadata import ArtifactError


class FakeModel:
    def __init__(self, payload: bytes):
        self.payload = payload

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.payload)


def weights(seed: int, units: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.3, shape).astype("float32") for name, shape in store.weight_shapes(units).items()}


def save(models: Path, sensor_id: str, seed: int, window: int = 6, units: int = 3, **extra) -> Path:
    """A model whose every number carries ``seed``."""
    scaler = StandardScaler().fit(np.array([[seed], [seed + 2.0]]))
    record = {
        "sensor_id": sensor_id,
        "window": window,
        "interval_s": 900,
        "threshold": 0.1 + seed,
        "scaler": {"mean": float(seed), "scale": 1.0 + seed},
        "longest_flat_run": seed,
        "centered": True,
        "levels": {"low": -float(seed), "high": float(seed)},
        "trained_at": f"2026-01-{1 + seed % 28:02d}T00:00:00Z",
        **extra,
    }
    directory = store.sensor_dir(models, sensor_id)
    store.save(directory, FakeModel(f"model-{seed}".encode()), scaler, weights(seed, units), record)
    return directory


SENSORS = ["AHU-1 supply", 'Boiler,2="hot" loop=ü', "chiller:3", "zone 7\\a"]


@pytest.fixture
def models(tmp_path):
    models = tmp_path / "models"
    for seed, sensor_id in enumerate(SENSORS):
        save(models, sensor_id, seed)
    return models


def packed(models: Path, sensor_ids=SENSORS):
    opened = pack.PackedStore.open(models)
    try:
        return opened.models(sensor_ids)
    finally:
        opened.close()


def test_the_pack_holds_what_each_sensors_own_files_give_the_scorer(models):
    assert pack_build.rebuild(models) == {(6, 3): 4}
    assert sorted(p.name for p in models.glob("pack-*")) == ["pack-w6-u3.bin"]
    found = packed(models, [*SENSORS, "never trained"])
    assert sorted(found) == sorted(SENSORS)
    for sensor_id in SENSORS:
        own = model_predict.load_sensor_model(store.sensor_dir(models, sensor_id))
        metadata, got, (chunk, row) = found[sensor_id]
        assert metadata == own.metadata  # every field the scorer uses (ModelMetadata compares them, not the record)
        assert metadata.record["version"] == own.metadata.record["version"]
        assert sorted(got) == sorted(own.weights)
        for name, array in own.weights.items():
            assert got[name].dtype == np.float32 and np.array_equal(got[name], array), name
            assert np.shares_memory(got[name], chunk[name]) and np.array_equal(chunk[name][row], array), name


def test_a_model_without_the_optional_fields_keeps_them_absent(tmp_path):
    models = tmp_path / "models"
    directory = save(models, "old model", 3)
    record = json.loads((directory / store.METADATA).read_text())
    for key in ("longest_flat_run", "levels", "centered"):
        del record[key]
    (directory / store.METADATA).write_text(json.dumps(record))
    pack_build.rebuild(models)
    metadata, *_ = packed(models, ["old model"])["old model"]
    assert (metadata.longest_flat_run, metadata.levels, metadata.centered) == (None, None, False)
    assert metadata == model_predict.load_sensor_model(directory).metadata


def test_one_pack_per_shape_and_none_for_a_shape_gone(tmp_path):
    models = tmp_path / "models"
    save(models, "a", 1, window=6, units=3)
    save(models, "b", 2, window=8, units=3)
    save(models, "c", 3, window=6, units=5)
    assert pack_build.rebuild(models) == {(6, 3): 1, (8, 3): 1, (6, 5): 1}
    assert {s: m.window for s, (m, *_) in packed(models, ["a", "b", "c"]).items()} == {"a": 6, "b": 8, "c": 6}
    save(models, "b", 4, window=6, units=3)  # retrained with another window
    assert pack_build.rebuild(models) == {(6, 3): 2, (6, 5): 1}
    assert sorted(p.name for p in models.glob("pack-*")) == ["pack-w6-u3.bin", "pack-w6-u5.bin"]


@pytest.mark.parametrize(
    "change",
    ["retrained", "weights rewritten", "weights deleted", "metadata rewritten", "model deleted", "scaler deleted"],
)
def test_a_sensor_whose_files_changed_since_packing_is_not_read_from_the_pack(models, change):
    pack_build.rebuild(models)
    directory = store.sensor_dir(models, SENSORS[1])
    record = json.loads((directory / store.METADATA).read_text())
    weights_file = directory / record["files"]["weights"]
    if change == "retrained":
        save(models, SENSORS[1], 9)
    elif change == "weights rewritten":  # same bytes, but written again: the pack cannot know it is the same
        before = weights_file.stat().st_mtime_ns
        weights_file.write_bytes(weights_file.read_bytes())
        os.utime(weights_file, ns=(before - 10**9, before - 10**9))  # as an older copy put back would be
    elif change == "weights deleted":
        weights_file.unlink()
    elif change == "metadata rewritten":
        (directory / store.METADATA).write_text(json.dumps(dict(record, threshold=5.0)))
    elif change == "model deleted":
        (directory / record["files"]["model"]).unlink()
    elif change == "scaler deleted":
        (directory / record["files"]["scaler"]).unlink()
    found = packed(models)
    assert SENSORS[1] not in found
    assert sorted(found) == sorted(set(SENSORS) - {SENSORS[1]})


def test_a_rebuild_packs_the_retrained_model_and_reuses_the_others(models, monkeypatch):
    pack_build.rebuild(models)
    save(models, SENSORS[2], 7)
    read = []
    original = pack_build.row_from_files
    monkeypatch.setattr(pack_build, "row_from_files", lambda directory: read.append(directory) or original(directory))
    pack_build.rebuild(models)
    assert read == [store.sensor_dir(models, SENSORS[2])]
    metadata, got, _ = packed(models)[SENSORS[2]]
    assert metadata.threshold == pytest.approx(7.1) and np.array_equal(got["output_bias"], weights(7, 3)["output_bias"])


def test_a_model_retrained_while_it_is_packed_is_left_out_never_mixed(models, monkeypatch):
    """The retrain lands between reading the sensor's metadata and its weights: that row would mix two
    versions, so the rebuild leaves the sensor out (the scorer loads it from its own files)."""
    original = store.load_weights
    retrained = []

    def load_weights(path, sha256, sensor_id=None):
        if sensor_id == SENSORS[0] and not retrained:
            retrained.append(save(path.parent.parent, SENSORS[0], 11))
        return original(path, sha256, sensor_id)

    monkeypatch.setattr(store, "load_weights", load_weights)
    assert pack_build.rebuild(models) == {(6, 3): 3}
    assert retrained and SENSORS[0] not in packed(models)
    monkeypatch.setattr(store, "load_weights", original)
    pack_build.rebuild(models)
    metadata, *_ = packed(models)[SENSORS[0]]
    assert metadata.threshold == pytest.approx(11.1)


def test_a_damaged_model_is_left_out_of_the_pack(models):
    directory = store.sensor_dir(models, SENSORS[3])
    record = json.loads((directory / store.METADATA).read_text())
    weights_file = directory / record["files"]["weights"]
    weights_file.write_bytes(weights_file.read_bytes()[:-7])
    assert pack_build.rebuild(models) == {(6, 3): 3}
    assert SENSORS[3] not in packed(models)


def header_of(path: Path) -> dict:
    return json.loads(path.read_bytes().split(b"\n", 3)[2])


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip a byte of a small array", "checksum mismatch"),
        ("flip a byte of the header", "checksum mismatch"),
        ("truncate", "shorter than its header says"),
        ("another format version", "not a pack of format version 2"),
        ("empty", "truncated header"),
    ],
)
def test_a_damaged_pack_is_refused_whole_and_its_sensors_load_from_their_own_files(models, caplog, damage, message):
    pack_build.rebuild(models)
    path = models / "pack-w6-u3.bin"
    content = bytearray(path.read_bytes())
    if damage == "flip a byte of a small array":
        content[header_of(path)["arrays"]["threshold"]["offset"] + 3] ^= 0x01
    elif damage == "flip a byte of the header":
        content[content.index(b"AHU-1")] ^= 0x01
    elif damage == "truncate":
        del content[-64:]
    elif damage == "another format version":
        content[len(pack.MAGIC) + 1] = ord("9")
    elif damage == "empty":
        content = bytearray()
    path.write_bytes(bytes(content))
    with pytest.raises(ArtifactError, match=message):
        pack.open_pack(path)
    with caplog.at_level(logging.WARNING):
        assert packed(models) == {}
    assert f"{path}: " in caplog.text and "load from their own files" in caplog.text


@pytest.mark.parametrize("name", store.WEIGHT_NAMES)
def test_a_damaged_row_of_weights_fails_only_its_sensor_which_loads_from_its_own_files(models, caplog, name):
    """The weights are checked row by row as they are read: a scorer hashes only the sensors it scores, and a
    damaged row costs only its sensor the pack. The next rebuild reads that sensor from its own files."""
    pack_build.rebuild(models)
    path = models / "pack-w6-u3.bin"
    spec = header_of(path)["arrays"][name]
    row_bytes = np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["shape"][1:]))
    content = bytearray(path.read_bytes())
    content[spec["offset"] + 2 * row_bytes + row_bytes // 2] ^= 0x01  # the third sensor's row, sorted
    path.write_bytes(bytes(content))
    damaged = sorted(SENSORS)[2]
    with caplog.at_level(logging.WARNING):
        found = packed(models)
    assert sorted(found) == sorted(s for s in SENSORS if s != damaged)
    assert f"{path}: the weights of sensor {damaged!r} do not match their checksum" in caplog.text
    for sensor_id, (_, got, _) in found.items():
        own = model_predict.load_sensor_model(store.sensor_dir(models, sensor_id))
        assert all(np.array_equal(got[n], own.weights[n]) for n in store.WEIGHT_NAMES)
    pack_build.rebuild(models)
    assert sorted(packed(models)) == sorted(SENSORS)


def test_a_pack_of_format_version_1_is_still_read_verified_whole(models, caplog):
    """Packs written before per-row checksums are read until the next training run rewrites them."""
    pack_build.rebuild(models)
    path = models / "pack-w6-u3.bin"
    header_line = path.read_bytes().split(b"\n", 3)[2]
    header = json.loads(header_line)
    del header["row_sha256"]
    old_header = json.dumps(header, sort_keys=True).encode() + b"\n"
    first_array = min(spec["offset"] for spec in header["arrays"].values())
    prefix = len(pack.MAGIC) + 3 + 65
    after = old_header + b"\0" * (first_array - prefix - len(old_header)) + path.read_bytes()[first_array:]
    version_1 = pack.MAGIC + b" 1\n" + hashlib.sha256(after).hexdigest().encode() + b"\n" + after
    path.write_bytes(version_1)
    with caplog.at_level(logging.WARNING):
        assert sorted(packed(models)) == sorted(SENSORS)
    assert caplog.text == ""
    flipped = bytearray(version_1)
    flipped[header["arrays"][store.WEIGHT_NAMES[0]]["offset"] + 5] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        pack.open_pack(path)


def test_a_scorer_keeps_reading_the_pack_it_verified_while_a_rebuild_replaces_it(models):
    pack_build.rebuild(models)
    opened = pack.PackedStore.open(models)
    try:
        before = {s: m.threshold for s, (m, *_) in opened.models(SENSORS).items()}
        save(models, SENSORS[0], 20)
        pack_build.rebuild(models)
        # The old row of the retrained sensor no longer matches its files; the others still come from the
        # pack opened first, as verified then.
        after = opened.models(SENSORS)
        assert SENSORS[0] not in after
        assert {s: m.threshold for s, (m, *_) in after.items()} == {s: before[s] for s in SENSORS[1:]}
    finally:
        opened.close()


def test_a_rebuild_removes_what_a_killed_one_left(models):
    pack_build.rebuild(models)
    left = models / ".pack-w6-u3.bin.12345.tmp"
    left.write_bytes(b"half a pack")
    pack_build.rebuild(models)
    assert not left.exists() and (models / "pack-w6-u3.bin").exists()
    assert sorted(packed(models)) == sorted(SENSORS)


def test_no_models_no_pack(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    assert pack_build.rebuild(models) == {}
    assert list(models.iterdir()) == []
    assert packed(models) == {}
