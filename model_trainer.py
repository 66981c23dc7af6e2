"""The LSTM autoencoder's life cycle before it is saved: build, fit, threshold. Imports TensorFlow.

The model reconstructs a standardized window of ``window`` readings; windows it reconstructs badly
are unlike what it saw in training. Shapes: windows are ``[n_windows, window, 1]``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class FitResult:
    epochs: int
    train_loss: float
    val_loss: float


def limit_threads(threads: int) -> None:
    """Size TensorFlow's thread pools; only possible before its first operation in this process."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


@functools.cache
def library_versions() -> dict[str, str]:
    """Recorded with each model: a model from other versions may load differently."""
    import pandas
    import sklearn
    import tensorflow

    return {"keras": keras.__version__, "numpy": np.__version__, "pandas": pandas.__version__,
            "scikit-learn": sklearn.__version__, "tensorflow": tensorflow.__version__}


def seed_everything(seed: int) -> None:
    """Same seed, same data -> same weights and threshold (deterministic ops, at some cost in speed)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(window: int, units: int, dropout: float) -> keras.Model:
    """Encoder LSTM -> RepeatVector -> decoder LSTM -> TimeDistributed Dense, MAE loss.

    Input and output shape: ``[batch, window, 1]``.
    """
    inputs = keras.Input(shape=(window, 1), name="window")
    encoded = keras.layers.LSTM(units, dropout=dropout, name="encoder")(inputs)
    repeated = keras.layers.RepeatVector(window, name="repeat")(encoded)
    decoded = keras.layers.LSTM(units, dropout=dropout, return_sequences=True, name="decoder")(repeated)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(1), name="output")(decoded)
    model = keras.Model(inputs, outputs, name="lstm_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mae")
    return model


def fit_model(model: keras.Model, windows: np.ndarray, epochs: int, batch_size: int,
              validation_split: float, patience: int) -> FitResult:
    """Fit the model to reproduce ``windows`` [n_windows, window, 1].

    The validation windows are the last ``validation_split`` of the series (Keras takes them from the
    end, before shuffling), so early stopping judges the model on later data than it learned from.
    The best weights by validation loss are kept.
    """
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    history = model.fit(windows, windows, epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                        shuffle=True, callbacks=[stop], verbose=0)
    val = history.history["val_loss"]
    best = int(np.argmin(val))
    return FitResult(epochs=len(val), train_loss=float(history.history["loss"][best]), val_loss=float(val[best]))


def export_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The trained weights by the names artifacts.WEIGHT_NAMES gives them, for the NumPy scorer."""
    encoder, decoder, dense = (model.get_layer(name) for name in ("encoder", "decoder", "output"))
    names = ("kernel", "recurrent_kernel", "bias")
    weights = {f"encoder_{n}": np.asarray(w) for n, w in zip(names, encoder.get_weights())}
    weights.update({f"decoder_{n}": np.asarray(w) for n, w in zip(names, decoder.get_weights())})
    kernel, bias = dense.get_weights()
    weights.update(output_kernel=np.asarray(kernel), output_bias=np.asarray(bias))
    return weights


def loss_threshold(losses: np.ndarray, percentile: float) -> float:
    """The ``percentile`` (0-100) of the training windows' reconstruction losses [n_windows]."""
    return float(np.percentile(losses, percentile))
