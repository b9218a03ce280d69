"""A log of your own whose vocabulary has an item catalogue and allows repeats, through the main
command: every trained model carries the catalogue's fields (config and weights), and the summary
reports the buy-again baseline beside popularity.

The log is the example store's purchase log (world.example_log); its catalogue is made up here
(`item_id % 5`), so it tells the model nothing of the world's hidden topics: this test is about
the plumbing, tests/training/test_catalogue_model.py about what the fields teach."""

import json

import pandas as pd
import pytest

from tests.helpers import log_options, pinrec_ops
from tests.ingest.test_own_data import RUN_DAYS, TINY, WORLD
from world.example_log import write_example_log

pytestmark = pytest.mark.services  # starts processes of its own


def test_a_catalogue_travels_with_the_models_and_repeats_report_buy_again(tmp_path):
    location, vocabulary = write_example_log(tmp_path / "log", "store", WORLD, "folder")
    events = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "log" / "events").glob("*.parquet"))])
    items = sorted(set(events["item_id"].tolist()))
    listed = items[: len(items) * 9 // 10]  # the rest are missing from the catalogue: "unknown"
    pd.DataFrame({"item_id": listed, "aisle": [f"aisle_{i % 5}" for i in listed]}).to_csv(
        vocabulary.parent / "products.csv", index=False
    )
    vocabulary.write_text(vocabulary.read_text() + "repeats: true\ncatalogue: {path: products.csv, fields: [aisle]}\n")
    args = ["lifecycle", *log_options(location, vocabulary), "--days", str(RUN_DAYS)]
    proc = pinrec_ops(tmp_path / "var", *args, env={**TINY, "DAGSTER_HOME": str(tmp_path / "dagster_home")})
    data = tmp_path / "var" / "parquet"
    summary = json.loads((data / "summary.json").read_text())
    entry = summary["surfaces"]["store"]
    assert 0.0 <= entry["buy_again_recall@100"] <= 1.0, entry
    assert entry["yardstick"]["buy_again"] == entry["buy_again_recall@100"]  # no impressions: recall
    assert "buy again" in proc.stdout
    configs = [json.loads(p.read_text()) for p in (data / "models").glob("*/*/config.json")]
    assert configs  # pretrained and fine-tuned alike
    aisles = [f"aisle_{i}" for i in range(5)]
    assert all(c["model"]["catalogue"] == [["aisle", aisles]] for c in configs)
