"""Small helpers shared by the analyses: result dataclasses <-> JSON-ready dicts, and statistics.

`to_dict` turns a result into plain Python (dict / list / float / int / str / bool / None) that
`json.dumps` writes and that browsers parse: numpy arrays become nested lists, NaN becomes None.
`from_dict(cls, d)` rebuilds the dataclass from the field annotations, so a JSON report
round-trips to an equal result (`results_equal` compares two of them, NaN equal to NaN).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np

# Largest top-k a comparison reports, and the elements of one (rows, V) float64 chunk: 2^22 · 8 bytes = 32 MiB
# per array whatever the vocabulary (logits are formed in chunks of rows).
MAX_TOP_K = 100
CHUNK_ELEMENTS = 1 << 22

# Quantile levels every analysis reports (1, 5, 25, 50, 75, 95, 99 %).
QUANTILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


# --------------------------------------------------------------------------- to / from dict


def _clean_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, float):
        return _clean_float(x)
    return x


def to_dict(obj) -> Any:
    """Recursively convert a result to JSON-ready Python.

    dataclass -> dict (field order kept), numpy array / torch tensor -> nested lists, numpy scalar ->
    Python scalar, NaN -> None, Enum -> its value, Path -> str, tuple -> list. ±inf is kept
    (``json.dumps`` writes ``Infinity``); analyses avoid it in results.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return _nan_to_none(obj.tolist())
    if isinstance(obj, np.generic):
        return to_dict(obj.item())
    if isinstance(obj, float):
        return _clean_float(obj)
    if isinstance(obj, enum.Enum):
        return to_dict(obj.value)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(to_dict(k))): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if type(obj).__module__.startswith("torch"):  # tensors without importing torch here
        return _nan_to_none(obj.detach().cpu().tolist())
    raise TypeError(f"to_dict cannot convert {type(obj).__name__}")


def _none_to_nan(x):
    if isinstance(x, list):
        return [_none_to_nan(v) for v in x]
    return math.nan if x is None else x


def _to_array(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:  # None entries (NaN on the way out) or ragged input
        arr = np.asarray(_none_to_nan(value), dtype=float)
    return arr


def _convert(tp, value):
    """Convert a JSON value back to the annotated type `tp` (best effort, never guesses wildly)."""
    if tp is Any or tp is None:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value)
            except (TypeError, ValueError):
                continue
        return value
    if value is None:
        return math.nan if tp is float else None
    if tp is np.ndarray or origin is np.ndarray:
        return _to_array(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float:
        return float(value)
    if tp is Path:
        return Path(value)
    if origin in (list, typing.List):
        (arg,) = typing.get_args(tp) or (Any,)
        return [_convert(arg, v) for v in value]
    if origin in (tuple, typing.Tuple):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        if args:
            return tuple(_convert(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin in (dict, typing.Dict):
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {(_convert(kt, k) if kt in (int, float) else k): _convert(vt, v) for k, v in value.items()}
    return value


def from_dict(cls, d: dict):
    """Rebuild dataclass `cls` from `to_dict` output (or parsed JSON).

    Fields annotated `np.ndarray` become arrays again (None -> NaN), nested dataclasses, lists,
    tuples and dicts of them are rebuilt, a `float` field holding None becomes NaN. Unknown keys
    are ignored (older/newer reports still load); missing keys fall back to field defaults.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(d, dict):
        raise TypeError(f"from_dict({cls.__name__}) needs a dict, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.init and f.name in d:
            kwargs[f.name] = _convert(hints.get(f.name, Any), d[f.name])
    return cls(**kwargs)


def results_equal(a, b, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Deep equality for results holding numpy arrays (NaN == NaN; dataclass `==` cannot do this)."""
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and all(
            results_equal(getattr(a, f.name), getattr(b, f.name), rtol=rtol, atol=atol)
            for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(results_equal(a[k], b[k], rtol=rtol, atol=atol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(results_equal(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=atol) or a == b
    return a == b


# --------------------------------------------------------------------------- statistics


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of `values` in the bins given by `edges` (numpy's convention: last bin closed)."""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=edges)
    return counts.astype(np.int64)


def bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """`bins` equal-width bins over the range of `values` (a unit-wide range when all are equal)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


# --------------------------------------------------------------------------- settings checks


def check_int(value, lo: int, hi: int | None, what: str) -> int:
    """`value` as an int in [lo, hi] (hi None: no upper bound), or an InputError naming `what`.

    Booleans are refused: `True` is an int to Python but never a meant count.
    """
    from inspector.errors import InputError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"The {what} must be a whole number, got {value!r}.")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise InputError(f"The {what} is {value}; it must be {rng}.")
    return value
