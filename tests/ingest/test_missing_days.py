"""A day missing from a file-per-day log is data, not a crash: the main command reports it on one
line (`D: no events in the log, skipped`), runs every other day and retrains across the gap. Its
output, piped, carries no ANSI escape and no library banner, and each day's line ends with its
verdict."""

import os
import re
from datetime import date, timedelta

import pytest

from events.table import EventTable
from tests.helpers import log_options, log_world, pinrec_ops
from world.example_log import write_example_log

pytestmark = pytest.mark.services  # runs the main command (its own S3 server)

WORLD = log_world(seed=11, start=date(2026, 3, 1), n_days=21, events_per_day=600)
BANNERS = ("GPU available", "TPU available", "Tip:", "litlogger", "litmodels")


def test_a_three_week_log_with_a_missing_middle_day_runs_to_the_end(tmp_path):
    location, vocabulary = write_example_log(tmp_path / "log", "store", WORLD, "pattern")
    gap = WORLD.start_date + timedelta(days=10)
    os.remove(location.replace("{date}", gap.isoformat()))  # the store was closed that day
    args = ["lifecycle", *log_options(location, vocabulary), "--days", "21"]
    proc = pinrec_ops(tmp_path / "var", *args)
    out = proc.stdout + proc.stderr
    assert re.findall(r"(\d{4}-\d{2}-\d{2}): no events in the log, skipped", proc.stdout) == [gap.isoformat()]
    table = EventTable(tmp_path / "var" / "parquet" / "lake")
    days = [WORLD.start_date + timedelta(days=i) for i in range(WORLD.n_days)]
    assert table.days() == [d for d in days if d != gap]  # every other day ingested
    # the retrain of the newest day trained across the gap and ends with its verdict
    [retrain] = [line for line in proc.stdout.splitlines() if line.strip().startswith("retrain ")]
    assert days[-1].isoformat() in retrain and re.search(r"run \w{8}  (promoted|not promoted: )", retrain), retrain
    nightly = [line for line in proc.stdout.splitlines() if line.strip().startswith("nightly_refresh ")]
    assert len(nightly) == len(days) - 1 and all(line.endswith("  ok") for line in nightly), nightly
    # piped output: no colour codes, no banners or tips
    assert "\x1b[" not in out
    assert not [b for b in BANNERS if b in out], out[-3000:]
