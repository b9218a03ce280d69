"""Raw input columns coerced to the contract's types, whole columns at a time.

Each `coerce_*` function takes one raw column and returns the coerced column and the rows that
failed coercion, as ``{reason: mask}`` (a row fails at most one coercion per column). The work is
done on whole columns (numpy, pandas, Arrow compute): typed columns (int64, float64, bool,
timestamps, strings) never touch a row in Python. Python looks at single values only where the
column gives it no other choice, and then only at those values:

* an object column whose values mix Python types (a loose in-memory frame; a parquet column has
  one type) or hold bytes: each value is parsed on its own, as before;
* a text value that is not a plain decimal integer (``" 1e3"``, ``"1.5"``, ``"abc"``) in an id
  column, or a timestamp text that is not canonical ISO 8601 with an offset (``"Jan 5 2026
  10:00 +00:00"``, a year past 2262): that value is parsed on its own.

So a clean input costs no per-row Python, and a broken one costs it only for its broken values.
The per-value parsers are the reference: the vectorized paths give the same value and the same
reason for every input they take.
"""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from events.contract import TIMESTAMP_DTYPE

INT64_MAX = np.iinfo(np.int64).max
TZ_SUFFIX = re.compile(r"(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)

# Text the vectorized paths take whole; anything else in a text column is parsed value by value.
_PLAIN_INT = r"^-?[0-9]{1,18}$"  # at most 18 digits: always inside int64
_ISO_WITH_OFFSET = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})$"
)
_ISO_NAIVE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?)?$"
_TZ_SUFFIX_RE2 = r"(?i)(Z|[+-][0-9][0-9]:?[0-9][0-9])$"

Reasons = dict[str, np.ndarray]


def as_text(value: object) -> str | None:
    """One raw value as text (bytes decoded, undecodable bytes escaped), None for a missing one."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def _mark(reasons: Reasons, reason: str, n: int, rows: np.ndarray | list[int]) -> None:
    if len(rows):
        mask = reasons.setdefault(reason, np.zeros(n, bool))
        mask[rows] = True


def _kind(values: pd.Series) -> str:
    """pandas' inferred kind of an object column's non-missing values (one C pass)."""
    return pd.api.types.infer_dtype(values, skipna=True)


# -- integers ----------------------------------------------------------------------------------


def parse_int(value: object) -> tuple[int | None, str | None]:
    """(integer or None, failure reason or None) for one raw value: the reference parser."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return None, "not an integer"
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None, None
        if not float(value).is_integer():
            return None, "not an integer"
        number = int(value)
    elif isinstance(value, (str, bytes)):
        text = as_text(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                return None, "not an integer"
            if not as_float.is_integer():
                return None, "not an integer"
            number = int(as_float)
    else:
        return None, "not an integer"
    if abs(number) > INT64_MAX:
        return None, "out of range"
    return number, None


def _ints_value_by_value(
    values: np.ndarray, rows: np.ndarray, out: np.ndarray, missing: np.ndarray, name: str, reasons: Reasons, n: int
) -> None:
    """Parse values[rows] one by one into out/missing, marking failures."""
    failed: dict[str, list[int]] = {}
    for i in rows:
        number, failure = parse_int(values[i])
        if failure:
            failed.setdefault(f"{name}: {failure}", []).append(i)
        if number is None:
            missing[i] = True
        else:
            out[i], missing[i] = number, False
    for reason, idx in failed.items():
        _mark(reasons, reason, n, idx)


def _float_ints(values: np.ndarray, name: str, reasons: Reasons) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    nan = np.isnan(values)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (np.floor(values) == values)
        too_big = whole & (np.abs(values) >= 2.0**63)  # int(x) > INT64_MAX exactly when |x| >= 2^63
    _mark(reasons, f"{name}: not an integer", n, np.flatnonzero(~nan & ~whole))
    _mark(reasons, f"{name}: out of range", n, np.flatnonzero(too_big))
    ok = whole & ~too_big
    out = np.zeros(n, np.int64)
    out[ok] = values[ok].astype(np.int64)
    return out, ~ok


def _text_ints(values: pd.Series, name: str, reasons: Reasons) -> tuple[np.ndarray, np.ndarray]:
    """A column of str (and missing values): plain decimal integers in one Arrow pass, the rest
    one by one."""
    n = len(values)
    text = pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    plain = pc.fill_null(pc.match_substring_regex(text, _PLAIN_INT), False).to_numpy(zero_copy_only=False)
    out = np.zeros(n, np.int64)
    missing = np.ones(n, bool)
    rows = np.flatnonzero(plain)
    out[rows] = pc.cast(text.take(pa.array(rows)), pa.int64()).to_numpy(zero_copy_only=False)
    missing[rows] = False
    other = np.flatnonzero(~plain & ~pc.is_null(text).to_numpy(zero_copy_only=False))
    _ints_value_by_value(values.to_numpy(dtype=object), other, out, missing, name, reasons, n)
    return out, missing


def coerce_int(raw: pd.Series, name: str) -> tuple[pd.Series, Reasons]:
    """Nullable Int64; values that are not whole numbers in int64 become NA with a reason."""
    reasons: Reasons = {}
    n = len(raw)
    dtype = raw.dtype
    if pd.api.types.is_integer_dtype(dtype):
        return raw.astype("Int64"), reasons
    if pd.api.types.is_bool_dtype(dtype):
        present = raw.notna().to_numpy()
        _mark(reasons, f"{name}: not an integer", n, np.flatnonzero(present))
        return pd.Series(pd.array([pd.NA] * n, dtype="Int64"), index=raw.index), reasons
    if pd.api.types.is_float_dtype(dtype):
        values, missing = _float_ints(raw.to_numpy(dtype=np.float64, na_value=np.nan), name, reasons)
    else:
        values, missing = _object_ints(raw.astype(object), name, reasons)
    return pd.Series(pd.arrays.IntegerArray(values, missing), index=raw.index), reasons


def _object_ints(raw: pd.Series, name: str, reasons: Reasons) -> tuple[np.ndarray, np.ndarray]:
    n = len(raw)
    kind = _kind(raw)
    if kind == "empty":
        return np.zeros(n, np.int64), np.ones(n, bool)
    if kind == "string":
        return _text_ints(raw, name, reasons)
    if kind == "integer":
        present = raw.notna().to_numpy()
        try:
            out = np.zeros(n, np.int64)
            out[present] = np.asarray(raw.to_numpy()[present], dtype=np.int64)
            too_big = present & (out == np.iinfo(np.int64).min)  # |-2^63| > INT64_MAX, as parse_int says
            _mark(reasons, f"{name}: out of range", n, np.flatnonzero(too_big))
            return out, ~present | too_big
        except OverflowError:
            pass  # a Python int past int64: value by value
    if kind == "floating":
        return _float_ints(raw.to_numpy(dtype=np.float64, na_value=np.nan), name, reasons)
    out, missing = np.zeros(n, np.int64), np.ones(n, bool)
    _ints_value_by_value(raw.to_numpy(), np.arange(n), out, missing, name, reasons, n)
    return out, missing


# -- timestamps --------------------------------------------------------------------------------


def _parse_timestamp(value: object) -> tuple[pd.Timestamp | None, str | None]:
    """(UTC timestamp or None, failure reason or None) for one raw value: the reference parser."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None, None
    if isinstance(value, (pd.Timestamp, datetime)):
        ts = pd.Timestamp(value)
    elif isinstance(value, (str, bytes)):
        text = as_text(value).strip()
        if not TZ_SUFFIX.search(text):
            return None, "timestamp without timezone"
        try:
            ts = pd.Timestamp(text)
        except (ValueError, OverflowError):
            return None, "not a timestamp"
    else:
        return None, "not a timestamp"
    if ts.tzinfo is None:
        return None, "timestamp without timezone"
    try:
        return ts.tz_convert("UTC").as_unit("us"), None
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        return None, "out of range"


def _timestamps_value_by_value(
    values: np.ndarray, rows: np.ndarray, micros: np.ndarray, missing: np.ndarray, reasons: Reasons, n: int
) -> None:
    failed: dict[str, list[int]] = {}
    for i in rows:
        ts, failure = _parse_timestamp(values[i])
        if failure:
            failed.setdefault(f"event_ts: {failure}", []).append(i)
        if ts is not None:
            micros[i], missing[i] = ts.asm8.astype(np.int64), False  # microseconds (as_unit("us"))
    for reason, idx in failed.items():
        _mark(reasons, reason, n, idx)


def _text_timestamps(values: pd.Series, reasons: Reasons) -> tuple[np.ndarray, np.ndarray]:
    """A column of str: canonical ISO 8601 with an offset parsed in one pass, canonical ISO
    without one marked naive in one pass, the rest one by one."""
    n = len(values)
    text = pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)

    def matches(pattern: str, of: pa.Array = text) -> np.ndarray:
        return pc.fill_null(pc.match_substring_regex(of, pattern), False).to_numpy(zero_copy_only=False)

    micros, missing = np.zeros(n, np.int64), np.ones(n, bool)
    aware = np.flatnonzero(matches(_ISO_WITH_OFFSET))
    if len(aware):
        parsed = pd.to_datetime(
            pd.Series(text.take(pa.array(aware)).to_numpy(zero_copy_only=False)),
            format="ISO8601",
            utc=True,
            errors="coerce",
        )
        ok = parsed.notna().to_numpy()
        micros[aware[ok]] = parsed[ok].dt.as_unit("us").array.asi8
        missing[aware[ok]] = False
        aware_failed = aware[~ok]  # e.g. a year past 2262: parsed on its own below
    else:
        aware_failed = np.zeros(0, np.int64)
    naive = matches(_ISO_NAIVE) & ~matches(_TZ_SUFFIX_RE2)
    _mark(reasons, "event_ts: timestamp without timezone", n, np.flatnonzero(naive))
    handled = np.zeros(n, bool)
    handled[aware] = True
    handled |= naive | pc.is_null(text).to_numpy(zero_copy_only=False)
    handled[aware_failed] = False
    _timestamps_value_by_value(values.to_numpy(dtype=object), np.flatnonzero(~handled), micros, missing, reasons, n)
    return micros, missing


def coerce_timestamps(raw: pd.Series) -> tuple[pd.Series, Reasons]:
    """UTC microseconds; naive or unparseable values become NaT with a reason."""
    reasons: Reasons = {}
    n = len(raw)
    dtype = raw.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE), reasons
    if pd.api.types.is_datetime64_dtype(dtype):
        _mark(reasons, "event_ts: timestamp without timezone", n, np.flatnonzero(raw.notna().to_numpy()))
        return pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE), reasons
    if isinstance(dtype, pd.CategoricalDtype):
        raw, dtype = raw.astype(object), np.dtype(object)
    if dtype != object and not pd.api.types.is_string_dtype(dtype):  # numbers, bools: never a timestamp
        _mark(reasons, "event_ts: not a timestamp", n, np.flatnonzero(raw.notna().to_numpy()))
        return pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE), reasons
    values = raw.astype(object)
    kind = _kind(values)
    if kind == "empty":
        return pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE), reasons
    if kind == "string":
        micros, missing = _text_timestamps(values, reasons)
    else:
        micros, missing = np.zeros(n, np.int64), np.ones(n, bool)
        _timestamps_value_by_value(values.to_numpy(), np.arange(n), micros, missing, reasons, n)
    stamps = pd.Series(micros.astype("datetime64[us]"), index=raw.index).dt.tz_localize("UTC")
    return stamps.where(~missing, pd.NaT).astype(TIMESTAMP_DTYPE), reasons


# -- text --------------------------------------------------------------------------------------


def coerce_text(raw: pd.Series, name: str) -> tuple[pd.Series, Reasons]:
    """Object column of str (bytes decoded); values that are not text become missing with a reason."""
    reasons: Reasons = {}
    n = len(raw)
    dtype = raw.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype) and dtype != object:
        raw = raw.astype(object)
    elif dtype != object:  # numbers, bools, timestamps: never text
        present = raw.notna().to_numpy()
        _mark(reasons, f"{name}: not text", n, np.flatnonzero(present))
        return pd.Series([None] * n, index=raw.index, dtype=object), reasons
    kind = _kind(raw)
    if kind in ("string", "empty"):  # every value str or missing: nothing to coerce
        return raw, reasons
    text = raw.map(lambda v: v if isinstance(v, str) else as_text(v) if isinstance(v, bytes) else v)
    not_text = (text.notna() & ~text.map(lambda v: isinstance(v, str))).to_numpy()
    _mark(reasons, f"{name}: not text", n, np.flatnonzero(not_text))
    return text.where(~not_text, None).astype(object), reasons
