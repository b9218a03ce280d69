"""One deployment, one namespace: two deployments run by the main command on one machine, into one
S3 bucket (the embedded server of one var folder), keep their own data, Dagster instances, S3
prefixes and champions; the second's bootstrap never sees the first's champion. The operator lists
them and removes one without touching the other."""

import json
from datetime import date

import pytest

from tests.helpers import log_options, log_world, pinrec_ops
from world.example_log import write_example_log

pytestmark = pytest.mark.services  # runs the main command (its own S3 server)
MECHANICS = {"PINREC_GATE_BASELINES": "0"}

WORLD = log_world(seed=3, start=date(2026, 5, 1), n_days=4, events_per_day=800)


def test_two_deployments_in_one_bucket_keep_separate_champions(tmp_path):
    location, vocabulary = write_example_log(tmp_path / "log", "store", WORLD, "pattern")
    var = tmp_path / "var"
    log = [*log_options(location, vocabulary), "--days", "4"]
    # the subject is separation, not model quality: the gate bootstraps the tiny model's candidate
    # without asking it to beat popularity on the yardstick (a deployment setting)
    first = pinrec_ops(var, "lifecycle", "--deployment", "store-a", *log, env=MECHANICS)
    second = pinrec_ops(var, "lifecycle", "--deployment", "store-b", *log, env=MECHANICS)
    summaries = {name: json.loads((var / name / "summary.json").read_text()) for name in ("store-a", "store-b")}
    for name, proc in (("store-a", first), ("store-b", second)):
        [entry] = summaries[name]["surfaces"].values()
        assert entry["canary"] == "passed" and entry["champion"] == entry["candidate"]
        # each bootstrapped its own champion: no previous champion was measured
        assert entry["previous_champion_recall@100"] is None, (name, entry)
        assert f"deployment {name}" in proc.stdout and "bootstrapped" in proc.stdout
        assert (var / "dagster" / name / "dagster.yaml").exists()  # its own Dagster instance
    champions = [next(iter(s["surfaces"].values()))["champion"] for s in summaries.values()]
    listed = pinrec_ops(var, "deployments").stdout
    assert "store-a" in listed and "store-b" in listed and "pinrec-ops/store-b" in listed

    removed = pinrec_ops(var, "deployments", "--remove", "store-a").stdout
    assert "removed deployment store-a" in removed and "objects under s3://pinrec/pinrec-ops/store-a/" in removed
    assert not (var / "store-a").exists() and not (var / "dagster" / "store-a").exists()
    listed = pinrec_ops(var, "deployments").stdout
    assert "store-a" not in listed and "store-b" in listed
    # store-b's champion is still there, and its own: a retrain of an older day is compared with it
    older = [*log_options(location, vocabulary), "--start", "2026-05-01"]
    pinrec_ops(var, "lifecycle", "--deployment", "store-b", *older, "--days", "3", env=MECHANICS)
    [entry] = json.loads((var / "store-b" / "summary.json").read_text())["surfaces"].values()
    assert entry["champion"] == champions[1] and entry["previous_champion_recall@100"] is not None, entry
