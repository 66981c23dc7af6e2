"""The NumPy forward pass gives the same reconstruction loss as Keras, for trained models of several shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import clean
from anomaly import losses
from anomaly.metadata import ModelMetadata
from model_predict import SensorModel

model_trainer = pytest.importorskip("model_trainer")

SHAPES = [(5, 4), (15, 16), (15, 32), (30, 8)]


def training_windows(window: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(600)
    values = np.sin(2 * np.pi * t / 96) + rng.normal(0, 0.1, len(t))
    return clean.make_windows(values, window)


@pytest.fixture(scope="module")
def fleet():
    """Two briefly trained models per shape, with their windows (some with injected spikes)."""
    model_trainer.seed_everything(3)
    models, windows = [], []
    for n, (window, units) in enumerate(SHAPES * 2):
        keras_model = model_trainer.build_model(window, units, dropout=0.1)
        train = training_windows(window, n)
        model_trainer.fit_model(keras_model, train, epochs=2, batch_size=64, validation_split=0.1, patience=1)
        test = training_windows(window, 100 + n)[: 7 + 13 * n].copy()
        test[::5, window // 2, 0] += 12.0
        models.append(
            SensorModel(
                ModelMetadata(f"s{n}", window, pd.Timedelta(minutes=15), 0.1, 0.0, 1.0),
                weights=model_trainer.export_weights(keras_model),
                keras_model=keras_model,
            )
        )
        windows.append(test)
    return models, windows


def test_numpy_matches_keras_within_1e_4(fleet):
    models, windows = fleet
    numpy_losses, numpy_blame = losses.fleet_losses(models, windows, engine="numpy")
    keras_losses, keras_blame = losses.fleet_losses(models, windows, engine="keras")
    for model, got, want in zip(models, numpy_losses, keras_losses):
        assert got.shape == want.shape == (len(windows[models.index(model)]),)
        assert np.max(np.abs(got - want)) <= 1e-4, model.shape
        assert want.max() > 0.3  # the spikes are there, so the comparison covers large losses too
    # The worst reading of a window: the same one, but where two readings' errors are within float32 noise.
    for model, got, want in zip(models, numpy_blame, keras_blame):
        assert got.shape == want.shape and got["worst"].max() < model.shape[0]
        assert np.mean(got["worst"] == want["worst"]) > 0.99, model.shape
        assert np.max(np.abs(got["newest"] - want["newest"])) <= 1e-4, model.shape


def test_the_blame_of_a_window_holding_a_spike_is_the_spike(fleet):
    models, _ = fleet
    window = models[0].shape[0]
    spiked = np.zeros((window, window, 1), dtype="float32")
    spiked[np.arange(window), np.arange(window), 0] = 8.0  # window k: the spike at position k
    for engine in losses.ENGINES:
        _, (blame,) = losses.fleet_losses([models[0]], [spiked], engine)
        assert blame["worst"].tolist() == list(range(window)), engine
        # Only the last window's newest reading is the spike.
        assert blame["newest"][-1] > 4 * blame["newest"][:-1].max(), engine


def test_small_batches_and_empty_windows_give_the_same_losses(fleet, monkeypatch):
    models, windows = fleet
    whole, whole_blame = losses.fleet_losses(models, windows)
    monkeypatch.setattr(losses, "WINDOWS_PER_BATCH", 40)
    windows = [w if k != 2 else w[:0] for k, w in enumerate(windows)]
    split, split_blame = losses.fleet_losses(models, windows)
    assert split[2].shape == split_blame[2].shape == (0,)
    for k in (0, 1, 3, 4, 5, 6, 7):
        np.testing.assert_allclose(split[k], whole[k], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(split_blame[k]["worst"], whole_blame[k]["worst"])
        np.testing.assert_allclose(split_blame[k]["newest"], whole_blame[k]["newest"], rtol=0, atol=1e-6)


def test_a_run_of_packed_rows_is_sliced_from_its_chunk_and_gives_the_losses_of_its_own_weights(fleet):
    """Models read from the packed store carry their chunk's stacked weights: a batch that is a run of its rows
    is computed from a slice of them (no copy), any other from the sensors' weights stacked anew; the losses
    are the same to the last bit either way."""
    models, windows = fleet
    same_shape = [k for k, m in enumerate(models) if m.shape == models[2].shape]
    chunk = {key: np.stack([models[k].weights[key] for k in same_shape]) for key in models[2].weights}
    packed = [
        SensorModel(models[k].metadata, {key: array[row] for key, array in chunk.items()}, stacked=(chunk, row))
        for row, k in enumerate(same_shape)
    ]
    sliced = losses._batch_weights(packed)
    assert all(np.shares_memory(sliced[key], chunk[key]) for key in chunk)
    shuffled = losses._batch_weights(packed[::-1])
    assert not any(np.shares_memory(shuffled[key], chunk[key]) for key in chunk)
    np.testing.assert_array_equal(shuffled["encoder_kernel"], chunk["encoder_kernel"][::-1])
    got = losses.fleet_losses(packed, [windows[k] for k in same_shape])
    want = losses.fleet_losses([models[k] for k in same_shape], [windows[k] for k in same_shape])
    for a, b in zip([*got[0], *got[1]], [*want[0], *want[1]]):
        np.testing.assert_array_equal(a, b)
    assert got[1][0].dtype == losses.BLAME
