"""The losses a tick keeps for the next (anomaly/loss_memory.py): what it gives back, and what it refuses."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from anomaly import loss_memory
from anomaly import losses as losses_module
from anomaly.loss_memory import LossMemory
from anomaly.metadata import ModelMetadata

ENDS = np.array([900, 1800, 2700, 3600, 4500], dtype=np.int64)
LOSSES = np.array([0.1, 0.2, 0.3, 0.4, 0.5], dtype="float32")
BLAME = np.array([(14, 0.5), (0, 0.25), (7, 0.125), (3, 1.5), (14, 2.0)], dtype=losses_module.BLAME)


def kept() -> LossMemory:
    memory = LossMemory("engine=numpy")
    memory.keep("a", "v1", ENDS, LOSSES, BLAME, since=0)
    return memory


def test_it_gives_back_the_kept_losses_of_windows_before_the_due_range_only():
    hit, losses, blame = kept().recall("a", "v1", np.array([0, 1800, 2000, 2700, 3600, 4500, 5400]), before=3600)
    assert hit.tolist() == [False, True, False, True, False, False, False]
    # Exactly the float32 losses kept: a float32 loss survives the float64 file.
    assert losses.astype("float32").tolist() == LOSSES[[1, 2]].tolist()
    assert blame.tolist() == [(0, 0.25), (7, 0.125)]


def test_it_gives_nothing_for_another_model_or_sensor_or_when_empty():
    memory = kept()
    for sensor_id, key in [("a", "v2"), ("b", "v1")]:
        hit, losses, _ = memory.recall(sensor_id, key, ENDS, before=10**9)
        assert not hit.any() and len(losses) == 0
    memory.keep("a", "v1", np.empty(0, np.int64), np.empty(0, "float32"), np.empty(0, np.int32), since=0)
    assert not memory.recall("a", "v1", ENDS, before=10**9)[0].any()


def test_keeping_replaces_what_was_kept_from_since_on_and_forgetting_drops_sensors_no_longer_scored():
    memory = kept()
    memory.keep("d", "v1", ENDS, LOSSES, BLAME, since=2700)
    assert memory.entries["d"][1].tolist() == [2700, 3600, 4500]
    assert memory.entries["d"][2].astype("float32").tolist() == LOSSES[2:].tolist()
    del memory.entries["d"]
    memory.keep("a", "v2", ENDS[3:], LOSSES[3:], BLAME[3:], since=0)
    memory.keep("b", "v1", ENDS[:2], LOSSES[:2], BLAME[:2], since=0)
    assert not memory.recall("a", "v1", ENDS, before=10**9)[0].any()
    assert memory.recall("a", "v2", ENDS, before=10**9)[0].tolist() == [False, False, False, True, True]
    memory.keep("c", "v1", ENDS[:3], LOSSES[:3], BLAME[:3], since=0)
    memory.forget(before=2700)
    assert list(memory.entries) == ["a", "c"]  # b's newest window ends at 1800, c's at 2700
    memory.forget(before=2701)
    assert list(memory.entries) == ["a"]
    assert memory.entries["a"][1].dtype == np.int64  # the file's layout


def test_it_survives_a_save_and_a_load_under_the_same_signature_only(tmp_path, caplog):
    path = tmp_path / "state" / "x.losses.npz"
    memory = kept()
    memory.keep('Boiler,2="hot" ü', "v9", ENDS[:1], LOSSES[:1], BLAME[:1], since=0)
    loss_memory.save(path, memory)
    again = loss_memory.load(path, "engine=numpy")
    assert list(again.entries) == ["a", 'Boiler,2="hot" ü']
    for sensor_id, (key, ends, losses, blame) in memory.entries.items():
        assert again.entries[sensor_id][0] == key
        assert again.entries[sensor_id][1].tolist() == ends.tolist()
        assert again.entries[sensor_id][2].tolist() == losses.tolist()
        assert again.entries[sensor_id][3].tolist() == blame.tolist()
    with caplog.at_level(logging.INFO):
        assert loss_memory.load(path, "engine=keras").entries == {}
    assert "kept under other settings" in caplog.text
    assert loss_memory.load(tmp_path / "none.npz", "engine=numpy").entries == {}


def test_it_lies_beside_the_state_file_of_its_output(tmp_path):
    assert (
        loss_memory.beside(tmp_path / ".sensor_predict-state-abc.json")
        == tmp_path / ".sensor_predict-state-abc.losses.npz"
    )


def test_a_damaged_file_is_reported_and_read_as_empty(tmp_path, caplog):
    path = tmp_path / "x.losses.npz"
    loss_memory.save(path, kept())
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert loss_memory.load(path, "engine=numpy").entries == {}
    assert f"{path}: unreadable" in caplog.text and "every loss is computed" in caplog.text


def test_the_model_key_names_the_version_and_the_scaling_of_the_windows():
    metadata = ModelMetadata(
        sensor_id="a",
        window=15,
        interval=pd.Timedelta(minutes=15),
        threshold=0.1,
        mean=20.5,
        scale=2.0,
        centered=True,
        record={"version": "20260101T000000-abcdef"},
    )
    key = loss_memory.model_key(metadata)
    assert key is not None and key.startswith("20260101T000000-abcdef ")
    for changed in [{"mean": 20.25}, {"scale": 2.5}, {"centered": False}, {"window": 12}]:
        other = ModelMetadata(**{**metadata.__dict__, **changed})
        assert loss_memory.model_key(other) != key
    assert loss_memory.model_key(ModelMetadata(**{**metadata.__dict__, "record": {}})) is None


def test_only_the_windows_the_memory_does_not_keep_are_computed_and_every_loss_is_kept_for_the_next_tick():
    memory = kept()  # a: windows ending 900 .. 4500, from model v1
    computed = []

    def compute(windows):
        computed.append([w.tolist() for w in windows])
        # A "loss" and a blame that show which window they are from.
        blames = [np.array([(k, k / 10) for k in w], dtype=losses_module.BLAME) for w in windows]
        return [np.asarray(w, dtype="float32") * 10 for w in windows], blames

    ends = {"a": np.array([2700, 3600, 4500, 5400]), "b": np.array([3600, 4500]), "c": np.array([4500])}
    windows = {s: e / 900 for s, e in ends.items()}  # window k's "content" is k
    found, blame, remembered = loss_memory.losses(
        memory,
        ["a", "b", "c"],
        ["v1", "v1", None],
        list(ends.values()),
        [4500, 4500, 4500],  # each sensor's due range begins at 4500
        list(windows.values()),
        compute,
        reach=1800,  # the next tick looks back two windows from its due one
    )
    # a: 2700 and 3600 are kept (before its due range); 4500 is due and 5400 new, so both computed. b and c: none
    # kept (another sensor; no model key).
    assert computed == [[[5.0, 6.0], [4.0, 5.0], [5.0]]]
    assert [f.tolist() for f in found] == [[0.30000001192092896, 0.4000000059604645, 50.0, 60.0], [40.0, 50.0], [50.0]]
    assert [f.dtype for f in found] == [np.float32] * 3
    assert [b["worst"].tolist() for b in blame] == [[7, 3, 5, 6], [4, 5], [5]]
    assert blame[0]["newest"].tolist() == pytest.approx([0.125, 1.5, 0.5, 0.6])
    assert remembered == 2
    assert sorted(memory.entries) == ["a", "b"]  # c's model has no key: not kept
    assert [memory.entries[s][0] for s in ("a", "b")] == ["v1", "v1"]
    # Kept from each sensor's newest window back by the reach: all its next tick can look back on.
    assert memory.entries["a"][1].tolist() == [3600, 4500, 5400]
    assert memory.entries["a"][2].astype("float32").tolist() == found[0][1:].tolist()
    assert memory.entries["b"][1].tolist() == [3600, 4500]
