"""A day of the event table is committed atomically: its events and its quarantine become
visible together, at one rename (the commit point), after both files and their folder are flushed
to disk; a crash at any step leaves the old day or the new one, never new events with old
quarantine. Feast's registry file, rewritten on every apply and materialization, is replaced the
same way, so a reader never parses a half-written registry."""

import os
import threading
import time

import pandas as pd

from events.ingest import validate_events
from events.table import EventTable
from feature_pipeline.store import FeastSettings, apply_repo, open_store
from tests.helpers import SMALL_WORLD
from world.simulator import SimulatedWorld

WORLD = SimulatedWorld(SMALL_WORLD)
DAY = SMALL_WORLD.start_date


def _version(n_rows: int, n_bad: int):
    """A validated day: the first `n_rows` events of the day, `n_bad` of them made invalid."""
    raw = WORLD.day(DAY).head(n_rows).astype(object)
    raw.loc[raw.index[:n_bad], "surface"] = "nowhere"
    result = validate_events(raw, DAY)
    assert len(result.quarantine) == n_bad
    return result


OLD, NEW = _version(1200, 7), _version(1500, 31)  # told apart by their row counts


def _pair(table: EventTable) -> tuple[int, int]:
    """(events rows, quarantine rows) as a reader opening the two public paths sees them."""
    return len(pd.read_parquet(table.events_path(DAY))), len(pd.read_parquet(table.quarantine_path(DAY)))


def _expected(result) -> tuple[int, int]:
    return len(result.good), len(result.quarantine)


class _CrashAt:
    """Make the n-th rename (os.replace / os.rename) of a commit raise: a crash at that step."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0
        self.replace, self.rename = os.replace, os.rename

    def _wrap(self, real):
        def renamed(*args, **kwargs):
            self.calls += 1
            if self.calls == self.n:
                raise OSError(f"injected crash at rename {self.n}")
            return real(*args, **kwargs)

        return renamed

    def __enter__(self):
        os.replace, os.rename = self._wrap(self.replace), self._wrap(self.rename)
        return self

    def __exit__(self, *exc):
        os.replace, os.rename = self.replace, self.rename


def test_a_crash_at_any_rename_of_a_commit_leaves_the_old_day_or_the_new_one(tmp_path):
    seen = set()
    for n in range(1, 12):
        table = EventTable(tmp_path / f"lake-{n}")
        table.write_day(DAY, OLD.good, OLD.quarantine)
        with _CrashAt(n) as crash:
            try:
                table.write_day(DAY, NEW.good, NEW.quarantine)
            except OSError as exc:
                assert "injected crash" in str(exc)
        pair = _pair(table)
        assert pair in (_expected(OLD), _expected(NEW)), f"crash at rename {n}: torn day {pair}"
        seen.add(pair)
        if crash.calls < n:  # the commit needed fewer renames than n: every step was tried
            break
    assert seen == {_expected(OLD), _expected(NEW)}
    assert EventTable(tmp_path / "lake-1").days() == [DAY]


def test_readers_of_a_day_see_a_whole_commit_while_it_is_rewritten(tmp_path):
    """One writer alternates the day between two versions; readers take the day's pair of files
    (`EventTable.day_files`, resolved once) and always find events and quarantine of one commit."""
    table = EventTable(tmp_path / "lake")
    table.write_day(DAY, OLD.good, OLD.quarantine)
    stop, torn, reads = threading.Event(), [], []

    def write():
        while not stop.is_set():
            for version in (NEW, OLD):
                table.write_day(DAY, version.good, version.quarantine)

    def read():
        while not stop.is_set():
            files = table.day_files(DAY)
            pair = (len(pd.read_parquet(files.events)), len(pd.read_parquet(files.quarantine)))
            reads.append(pair)
            if pair not in (_expected(OLD), _expected(NEW)):
                torn.append(pair)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not torn and len(set(reads)) == 2 and len(reads) > 20


def test_rewriting_a_day_with_the_same_input_changes_no_byte_and_leaves_no_litter(tmp_path):
    table = EventTable(tmp_path / "lake")
    table.write_day(DAY, OLD.good, OLD.quarantine)
    first = (table.events_path(DAY).read_bytes(), table.quarantine_path(DAY).read_bytes())
    for version in (NEW, OLD, OLD):
        table.write_day(DAY, version.good, version.quarantine)
    assert (table.events_path(DAY).read_bytes(), table.quarantine_path(DAY).read_bytes()) == first
    generations = table.generations(DAY)
    assert 1 <= len(generations) <= 2  # the current commit, and at most the one before it


def test_a_commit_flushes_both_files_and_the_folders_before_it_is_visible(tmp_path, monkeypatch):
    table = EventTable(tmp_path / "lake")
    flushed: set[tuple[int, int]] = set()
    real_fsync = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        flushed.add((st.st_dev, st.st_ino))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    table.write_day(DAY, NEW.good, NEW.quarantine)
    files = table.day_files(DAY)
    for path in (files.events, files.quarantine, files.events.parent, files.commit_point.parent):
        st = os.stat(path)
        assert (st.st_dev, st.st_ino) in flushed, f"{path} was not flushed"


def test_a_day_written_by_the_previous_layout_is_replaced_by_a_commit(tmp_path):
    """Lakes written before the commit point (two plain files) are read as before and become
    committed days at their next write."""
    table = EventTable(tmp_path / "lake")
    from events.sources import write_parquet

    write_parquet(OLD.good, table.events_path(DAY))
    write_parquet(OLD.quarantine, table.quarantine_path(DAY))
    assert table.days() == [DAY] and _pair(table) == _expected(OLD)
    table.write_day(DAY, NEW.good, NEW.quarantine)
    assert _pair(table) == _expected(NEW) and table.days() == [DAY]


# -- Feast's registry --------------------------------------------------------------------------


def test_a_reader_never_sees_a_half_written_feast_registry(tmp_path):
    """Feast's file registry store rewrites registry.db in place (open with truncation, then
    write) on every apply and materialization: a concurrent reader (the service, another run)
    can read it empty or cut short. The project's store (feature_store.yaml's
    registry_store_type) replaces it atomically: over hundreds of rewrites, every one of the reads
    parses to the whole registry."""
    store = open_store(FeastSettings(tmp_path / "feast"))
    apply_repo(store)
    registry_store = store._registry._registry_store
    proto = registry_store.get_registry_proto()
    path = registry_store._filepath
    views = {v.spec.name for v in proto.feature_views}
    assert views and path.stat().st_size > 1000
    stop, bad, reads, writes = threading.Event(), [], [0], [0]

    def write():
        while not stop.is_set():
            registry_store.update_registry_proto(proto)
            writes[0] += 1

    def read():
        from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

        while not stop.is_set():
            raw = path.read_bytes()
            parsed = RegistryProto()
            try:
                parsed.ParseFromString(raw)
                if {v.spec.name for v in parsed.feature_views} != views:
                    bad.append(len(raw))
            except Exception:  # noqa: BLE001 - a torn file is exactly what is counted
                bad.append(len(raw))
            reads[0] += 1

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert reads[0] > 1000 and writes[0] > 50  # (each atomic write is flushed to disk: tens a second)
    assert bad == [], f"{len(bad)} of {reads[0]} reads saw a torn registry (sizes {bad[:5]})"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]  # no temp left
