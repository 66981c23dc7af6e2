"""A window's reconstruction loss: the mean absolute error of the autoencoder's reconstruction, and its blame
(``BLAME``): which of its readings was reconstructed worst and how far off its newest reading was, with
which detect tells a flag once however many windows hold its reading.

Two engines compute it. ``numpy`` (the scorer's default) runs the autoencoder's forward pass from the
exported weights, for all sensors of one shape (window, units) at once, without TensorFlow: a cron
tick over thousands of sensors then costs milliseconds per sensor, not a Keras load each. ``keras``
calls the Keras model itself, the source of truth, which training uses and the other is checked against.
Shapes: windows are ``[n_windows, window, 1]``, standardized.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from anomaly.parallel import cores, thread_map

ENGINES = ("numpy", "keras")
# Windows computed together at most: a batch's activations ([windows, 4 x units] floats) stay in the CPU's
# cache, which made the forward pass 1.7x faster than batches of 32,768 (see the README's Performance).
WINDOWS_PER_BATCH = 2048
# Per window: ``worst``, the position in the window of the reading with the largest error (0 .. window-1), and
# ``newest``, the error of its newest reading.
BLAME = np.dtype([("worst", np.int32), ("newest", np.float32)])


def blame(errors: np.ndarray) -> np.ndarray:
    """The BLAME of windows from their readings' errors [..., window]: shape [...]."""
    out = np.empty(errors.shape[:-1], dtype=BLAME)
    out["worst"] = errors.argmax(axis=-1)
    out["newest"] = errors[..., -1]
    return out


class Scorable(Protocol):
    """What the loss needs of a sensor's model: its exported weights, or its Keras model."""

    @property
    def weights(self) -> dict[str, np.ndarray] | None: ...

    @property
    def keras_model(self) -> Any: ...

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def stacked(self) -> tuple[dict[str, np.ndarray], int] | None: ...


def reconstruction(model: Any, windows: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute reconstruction error per window of a Keras model (or any callable model), and its blame.

    Parameters
    ----------
    windows : array, shape [n_windows, window, 1], standardized

    Returns
    -------
    two arrays, shape [n_windows]: the losses, and their BLAME
    """
    if len(windows) == 0:
        return np.empty(0, dtype="float32"), np.empty(0, dtype=BLAME)
    # Calling the model directly, not predict(): no tf.function is traced anew for every model loaded.
    errors = [
        np.abs(np.asarray(model(batch, training=False)) - batch)[:, :, 0]
        for batch in np.array_split(windows, max(1, -(-len(windows) // batch_size)))
    ]
    error = np.concatenate(errors)
    return error.mean(axis=1), blame(error)


def reconstruction_loss(model: Any, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The losses of ``reconstruction``, shape [n_windows]."""
    return reconstruction(model, windows, batch_size)[0]


def fleet_losses(
    models: list[Scorable], windows: list[np.ndarray], engine: str = "numpy"
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Loss per window for many sensors at once: ``windows[k]`` [n_k, window, 1] belongs to ``models[k]``.

    Returns two lists of arrays, shape [n_k] each: the losses, and their BLAME.
    """
    if engine == "keras":
        found = [reconstruction(m.keras_model, w) for m, w in zip(models, windows)]
        return [loss for loss, _ in found], [blamed for _, blamed in found]
    out = [np.empty(0, dtype="float32")] * len(models)
    blames = [np.empty(0, dtype=BLAME)] * len(models)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, model in enumerate(models):
        groups.setdefault(model.shape, []).append(k)
    # Batches small enough that every core gets one, or more.
    limit = max(1, min(WINDOWS_PER_BATCH, -(-sum(map(len, windows)) // cores())))
    batches = []
    for members in groups.values():
        members.sort(key=lambda k: len(windows[k]))
        batches += _batches(members, [len(windows[k]) for k in members], limit)

    def compute(batch: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return _padded_losses(_batch_weights([models[k] for k in batch]), [windows[k] for k in batch])

    for batch, (losses, blamed) in zip(batches, thread_map(compute, batches)):
        for row, k in enumerate(batch):
            out[k] = losses[row, : len(windows[k])]
            blames[k] = blamed[row, : len(windows[k])]
    return out, blames


def _batches(members: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive runs of members (sorted by size) whose padded size stays within ``limit`` windows."""
    batches: list[list[int]] = []
    current: list[int] = []
    for k, size in zip(members, sizes):
        if current and (len(current) + 1) * max(size, 1) > limit:
            batches.append(current)
            current = []
        current.append(k)
    return [*batches, current] if current else batches


def _batch_weights(models: list[Scorable]) -> dict[str, np.ndarray]:
    """A batch's weights stacked [sensors, ...]: a slice of its chunk's weights as the packed store read them
    when the batch is a run of their rows (a tick's batches are), else the sensors' weights stacked anew."""
    stacked = [model.stacked for model in models]
    if stacked[0] is not None:
        chunk, first = stacked[0]
        if all(s is not None and s[0] is chunk and s[1] == first + k for k, s in enumerate(stacked)):
            return {
                key: array[first : first + len(models)].astype("float32", copy=False) for key, array in chunk.items()
            }
    weights = [model.weights or {} for model in models]
    return {key: np.stack([w[key] for w in weights]).astype("float32", copy=False) for key in weights[0]}


def _padded_losses(weights: dict[str, np.ndarray], windows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Losses and BLAME [n_sensors, max_windows] of sensors sharing a shape (``weights`` stacked),
    windows zero-padded to the longest."""
    longest = max(1, max(len(w) for w in windows))
    x = np.zeros((len(windows), longest, windows[0].shape[1]), dtype="float32")
    for row, w in enumerate(windows):
        x[row, : len(w)] = w[:, :, 0]
    return forward_losses(weights, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _lstm_step(projected: np.ndarray, h: np.ndarray, c: np.ndarray, recurrent: np.ndarray):
    """One LSTM step in Keras' gate order (input, forget, cell, output) for [sensors, windows, units]."""
    z = projected + np.matmul(h, recurrent)
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def forward_losses(weights: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The autoencoder's forward pass and loss for sensors of one shape, in float32.

    Parameters
    ----------
    weights : arrays stacked over sensors: ``encoder_kernel`` [S, 1, 4U], ``encoder_recurrent_kernel``
        [S, U, 4U], ``encoder_bias`` [S, 4U], the same three for the decoder (kernel [S, U, 4U]),
        ``output_kernel`` [S, U, 1], ``output_bias`` [S, 1]
    x : array, shape [S, n_windows, window], standardized

    Returns
    -------
    two arrays, shape [S, n_windows]: the mean absolute reconstruction error per window, and its BLAME
    """
    sensors, n_windows, window = x.shape
    units = weights["encoder_recurrent_kernel"].shape[1]
    h = np.zeros((sensors, n_windows, units), dtype="float32")
    c = np.zeros_like(h)
    for t in range(window):
        projected = x[:, :, t : t + 1] * weights["encoder_kernel"] + weights["encoder_bias"][:, None, :]
        h, c = _lstm_step(projected, h, c, weights["encoder_recurrent_kernel"])
    # RepeatVector: the decoder sees the same input at every step, so its projection is computed once.
    projected = np.matmul(h, weights["decoder_kernel"]) + weights["decoder_bias"][:, None, :]
    h = np.zeros_like(h)
    c = np.zeros_like(h)
    total = np.zeros((sensors, n_windows), dtype="float32")
    errors = np.empty((sensors, n_windows, window), dtype="float32")
    for t in range(window):
        h, c = _lstm_step(projected, h, c, weights["decoder_recurrent_kernel"])
        out = np.matmul(h, weights["output_kernel"])[..., 0] + weights["output_bias"]
        errors[..., t] = np.abs(out - x[:, :, t])
        total += errors[..., t]
    return total / window, blame(errors)
