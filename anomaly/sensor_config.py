"""The per-sensor files, threshold_ratios.json and time_step_sizes.json: read and validated once at start-up.

Each maps a sensor id to its ratio or window; a ``"default"`` key replaces the built-in default. Every error
is a ``ConfigError`` naming the file, the key and the value, and saying what a valid one looks like.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from anomaly.errors import ConfigError

DEFAULT_RATIO = 1.0
DEFAULT_WINDOW = 15


@dataclass(frozen=True)
class SensorConfig:
    """Per-sensor ratio and window, from threshold_ratios.json and time_step_sizes.json (the paths name
    them in messages)."""

    ratios: Mapping[str, float]
    windows: Mapping[str, int]
    default_ratio: float = DEFAULT_RATIO
    default_window: int = DEFAULT_WINDOW
    ratios_path: Path = Path("threshold_ratios.json")
    windows_path: Path = Path("time_step_sizes.json")

    def ratio(self, sensor_id: str) -> float:
        return self.ratios.get(sensor_id, self.default_ratio)

    def window(self, sensor_id: str) -> int:
        return self.windows.get(sensor_id, self.default_window)

    def unmatched(self, sensor_ids: Collection[str]) -> list[tuple[Path, list[str]]]:
        """Per file, in file order, the keys that name none of ``sensor_ids``: a misspelt id leaves its
        sensor at the default without a word, so the jobs say which keys they could not use."""
        known = set(sensor_ids)
        found = [
            (self.ratios_path, [k for k in self.ratios if k not in known]),
            (self.windows_path, [k for k in self.windows if k not in known]),
        ]
        return [(path, keys) for path, keys in found if keys]


class _DuplicateKey(Exception):
    """A key given twice in one JSON object; json.loads alone would keep the last value without a word."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` for json.loads that refuses a key given twice in one object."""
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _read_json_object(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; create it with {{}} to use the defaults") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8 JSON") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: key {e.args[0]!r} appears twice; keep one") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: JSON nested too deeply to read; it must be one object mapping sensor id to a number"
        ) from None
    except ValueError as e:  # an integer longer than Python converts (4300 digits)
        raise ConfigError(f"{path}: not usable JSON: {str(e).partition(';')[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object mapping sensor id to a number, not {type(data).__name__}")
    return data


def _ratio(path: Path, key: str, value: object) -> float:
    try:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < float(value) < math.inf
    except OverflowError:
        ok = False
    if not ok or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: key {key!r} has ratio {value!r}; a ratio must be a positive number such as 1.5")
    return float(value)


def _window(path: Path, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ConfigError(f"{path}: key {key!r} has window {value!r}; a window must be a whole number >= 2 such as 15")
    return value


def load_sensor_config(ratios_path: Path, windows_path: Path) -> SensorConfig:
    """Read and validate both per-sensor files; a ``"default"`` key overrides the built-in default."""
    ratios = {key: _ratio(ratios_path, key, value) for key, value in _read_json_object(ratios_path).items()}
    windows = {key: _window(windows_path, key, value) for key, value in _read_json_object(windows_path).items()}
    default_ratio = ratios.pop("default", DEFAULT_RATIO)
    default_window = windows.pop("default", DEFAULT_WINDOW)
    return SensorConfig(
        MappingProxyType(ratios), MappingProxyType(windows), default_ratio, default_window, ratios_path, windows_path
    )
