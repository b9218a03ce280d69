"""Feast features: list features round trip, point-in-time correct examples, idempotent days."""

import numpy as np
import pandas as pd
import pytest

from events.contract import OUTCOME_CODE, SURFACES
from feature_pipeline.store import (
    FEATURE_REPO,
    OFFLINE_TABLES,
    FeastSettings,
    apply_repo,
    materialize_day,
    online_user_sequences,
    open_store,
    training_examples,
    write_offline_tables,
)
from feature_pipeline.tables import SHOWN_DAYS, SHOWN_LENGTH, day_feature_tables, user_sequence_table
from tests.helpers import ingest_world


@pytest.fixture(scope="module")
def feature_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    table = ingest_world(root / "lake")
    settings = FeastSettings(data_dir=root / "feast")
    store = open_store(settings)
    apply_repo(store)
    tables = {}
    for day in table.days():
        tables[day] = day_feature_tables(table, day)
        write_offline_tables(settings, day, tables[day])
        materialize_day(store, day)
    return table, settings, store, tables


@pytest.mark.slow
def test_user_sequence_holds_the_last_engagements_in_time_order(feature_world):
    table, _, _, tables = feature_world
    last_day = table.days()[-1]
    seq = tables[last_day]["user_sequence"]
    events = table.read_until(last_day)
    engaged = events[events["outcome"] != "impression"].sort_values(["user_id", "event_ts"], kind="stable")
    for row in seq.head(10).itertuples():
        mine = engaged[engaged["user_id"] == row.user_id].tail(200)
        assert row.seq_item_ids.tolist() == mine["item_id"].tolist()
        assert row.seq_outcomes.tolist() == mine["outcome"].map(OUTCOME_CODE).tolist()
        assert row.seq_length == len(mine)
        assert row.event_timestamp == mine["event_ts"].max()
    assert OUTCOME_CODE["impression"] not in {o for r in seq["seq_outcomes"] for o in r}


def test_user_sequence_holds_the_items_shown_in_the_last_days_most_recent_last(feature_world):
    table, _, store, tables = feature_world
    last_day = table.days()[-1]
    seq = tables[last_day]["user_sequence"]
    events = table.read_until(last_day)
    since = pd.Timestamp(last_day, tz="UTC") - pd.Timedelta(days=SHOWN_DAYS - 1)
    shown = events[(events["outcome"] == "impression") & (events["event_ts"] >= since)]
    shown = shown.sort_values(["user_id", "event_ts"], kind="stable")
    checked = 0
    for row in seq.head(10).itertuples():
        mine = shown[shown["user_id"] == row.user_id].tail(SHOWN_LENGTH)
        expected = mine.drop_duplicates("item_id", keep="last").sort_values("event_ts", kind="stable")
        assert sorted(row.seq_shown_item_ids.tolist()) == sorted(expected["item_id"].tolist())
        assert row.seq_shown_item_ids.tolist()[-1:] == expected["item_id"].tolist()[-1:]
        checked += len(expected) > 0
    assert checked > 0
    online = online_user_sequences(store, seq["user_id"].head(3).tolist()).set_index("user_id")
    for row in seq.head(3).itertuples():
        assert list(online.loc[row.user_id]["seq_shown_item_ids"]) == row.seq_shown_item_ids.tolist()


def test_sequence_is_capped_at_max_length(feature_world):
    table, *_ = feature_world
    seq = user_sequence_table(table, table.days()[-1], max_length=5)
    assert seq["seq_length"].max() == 5
    assert all(len(items) <= 5 for items in seq["seq_item_ids"])


def test_list_features_round_trip_through_the_online_store(feature_world):
    table, _, store, tables = feature_world
    last = tables[table.days()[-1]]["user_sequence"].head(5)
    online = online_user_sequences(store, last["user_id"].tolist()).set_index("user_id")
    for row in last.itertuples():
        got = online.loc[row.user_id]
        assert list(got["seq_item_ids"]) == row.seq_item_ids.tolist()
        assert list(got["seq_surfaces"]) == row.seq_surfaces.tolist()
        assert list(got["seq_timestamps_us"]) == row.seq_timestamps_us.tolist()
        assert int(got["seq_length"]) == row.seq_length


def test_unknown_user_reads_as_missing_not_an_error(feature_world):
    *_, store, _ = feature_world
    online = online_user_sequences(store, [10**12])
    assert online["seq_item_ids"].iloc[0] is None


def test_training_examples_never_contain_the_event_or_a_later_one(feature_world):
    table, _, store, _ = feature_world
    days = table.days()
    targets = pd.concat([table.read_day(d) for d in days[1:]])
    targets = targets[targets["outcome"] != "impression"].sample(400, random_state=0)
    examples = training_examples(store, targets[["user_id", "item_id", "event_ts"]])
    assert len(examples) == len(targets)
    t_us = examples["event_ts"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    latest = np.array([max(s) if len(s) else -1 for s in examples["seq_timestamps_us"]])
    assert (latest < t_us).all(), "an example saw its own event or a later one"
    assert (examples["seq_length"] > 0).mean() > 0.5  # the join really found history


def test_training_example_is_the_latest_feature_row_strictly_before_the_event(feature_world):
    table, _, store, tables = feature_world
    rows = pd.concat([tables[d]["user_sequence"] for d in table.days()])
    targets = table.read_day(table.days()[2]).sample(40, random_state=1)
    examples = training_examples(store, targets[["user_id", "item_id", "event_ts"]])
    for target, example in zip(targets.itertuples(), examples.itertuples()):
        mine = rows[(rows["user_id"] == target.user_id) & (rows["event_timestamp"] < target.event_ts)]
        expected = mine.sort_values("event_timestamp")["seq_item_ids"].iloc[-1].tolist() if len(mine) else []
        assert list(example.seq_item_ids) == expected


def test_rematerializing_a_day_is_idempotent(feature_world):
    table, settings, store, tables = feature_world
    day = table.days()[-1]
    users = tables[day]["user_sequence"]["user_id"].head(8).tolist()
    before = online_user_sequences(store, users).to_dict("records")
    write_offline_tables(settings, day, day_feature_tables(table, day))
    materialize_day(store, day)
    after = online_user_sequences(store, users).to_dict("records")
    assert before == after


def test_feature_views_have_the_columns_of_the_tables_and_the_table_folders(feature_world):
    table, _, store, tables = feature_world
    day_tables = tables[table.days()[-1]]
    for view, df in day_tables.items():
        fields = [f.name for f in store.get_feature_view(view).features]
        assert fields == [c for c in df.columns if c not in ("user_id", "item_id", "event_timestamp")], view
    surface_fields = {f.name for f in store.get_feature_view("item_surface_stats").features}
    for surface in SURFACES:
        assert {f"{surface}_impressions", f"{surface}_engagement_rate"} <= surface_fields
    sources = (FEATURE_REPO / "data_sources.py").read_text()
    for folder in OFFLINE_TABLES.values():
        assert f'path="{folder}"' in sources


def test_apply_registers_the_views_and_services(feature_world):
    *_, store, _ = feature_world
    applied = apply_repo(store)
    assert applied["feature_views"] == ["item_stats", "item_surface_stats", "user_sequence"]
    assert applied["feature_services"] == ["item_features_service", "user_sequence_service"]
    assert {v.name for v in store.list_feature_views()} == set(applied["feature_views"])


def test_the_feature_views_are_a_function_of_the_code_ledger(tmp_path):
    """Two ledgers, two sets of columns, in one process; building them (and applying them) reads
    no file and leaves the working directory, sys.path and the environment as they were."""
    import os
    import sys

    from events.contract import BUILTIN_CODES
    from events.vocabulary import codes_record, load_vocabulary
    from feature_pipeline.store import repo_objects

    (tmp_path / "shop.yaml").write_text(
        "surfaces: [web, app]\noutcomes: [view, cart, purchase]\nengaged: [cart, purchase]\nimpression: view\n"
    )
    shop = load_vocabulary(tmp_path / "shop.yaml", tmp_path / "codes.json")
    store = open_store(FeastSettings(data_dir=tmp_path / "feast"))  # importing feast sets variables of its own
    before = (os.getcwd(), list(sys.path), dict(os.environ))
    views = {
        label: {v.name: v for v in repo_objects(codes_record(codes, label))["feature_views"]}
        for label, codes in (("builtin", BUILTIN_CODES), ("shop", shop.codes))
    }
    for label, codes in (("builtin", BUILTIN_CODES), ("shop", shop.codes)):
        columns = {f.name for f in views[label]["item_surface_stats"].features}
        figures = ("impressions", "engagements", "engagement_rate")
        assert columns == {f"{surface}_{figure}" for surface in codes.surfaces for figure in figures}
        counts = [f.name for f in views[label]["item_stats"].features][:-2]
        assert counts == codes_record(codes)["item_count_columns"]
        assert views[label]["user_sequence"].tags["pinrec/vocabulary"] == label
    apply_repo(store, shop.codes, "shop")
    assert (os.getcwd(), list(sys.path), dict(os.environ)) == before


def test_day_start_sequences_are_asked_of_feast_once_a_day_until_earlier_features_change(
    feature_world, tmp_path, monkeypatch
):
    import feature_pipeline.day_start as day_start

    table, settings, store, tables = feature_world
    days = table.days()
    users = sorted(tables[days[1]]["user_sequence"]["user_id"].head(20).tolist())
    asked = []

    def counted(*args, **kwargs):
        asked.append(len(args[1]))
        return training_examples(*args, **kwargs)

    monkeypatch.setattr(day_start, "training_examples", counted)
    first = day_start.day_start_examples(store, settings.data_dir, days[2], users, tmp_path)
    direct = training_examples(store, pd.DataFrame({"user_id": users, "event_ts": pd.Timestamp(days[2], tz="UTC")}))
    assert first["user_id"].tolist() == users
    assert first["seq_item_ids"].map(list).tolist() == direct["seq_item_ids"].map(list).tolist()
    # another surface's users of the same day: read from the day's file, Feast is not asked again
    again = day_start.day_start_examples(store, settings.data_dir, days[2], users[::4], tmp_path)
    assert again["user_id"].tolist() == users[::4] and asked == [20]
    assert again["seq_item_ids"].map(list).tolist() == first["seq_item_ids"].map(list).tolist()[::4]
    # an earlier day's features written again: a new file, the old one removed
    write_offline_tables(settings, days[1], day_feature_tables(table, days[1]))
    day_start.day_start_examples(store, settings.data_dir, days[2], users, tmp_path)
    assert asked == [20, 20] and len(list(tmp_path.glob(f"{days[2].isoformat()}-*.parquet"))) == 1


def test_list_columns_get_a_dask_token_that_follows_their_values():
    from dask.tokenize import tokenize

    from feature_pipeline.dask_tokens import install

    install()
    install()  # a second install keeps one registration
    frame = pd.DataFrame({"user_id": [1, 2, 3], "seq": [np.arange(3), np.arange(200), None], "name": ["a", "b", "c"]})
    same = pd.DataFrame({"user_id": [1, 2, 3], "seq": [np.arange(3), np.arange(200), None], "name": ["a", "b", "c"]})
    assert tokenize(frame) == tokenize(same)
    changed = same.copy()
    changed.at[1, "seq"] = np.r_[np.arange(199), 7]
    assert tokenize(changed) != tokenize(frame)
    longer = same.copy()
    longer.at[0, "seq"] = np.arange(4)
    assert tokenize(longer) != tokenize(frame)
    other_dtype = same.copy()
    other_dtype.at[0, "seq"] = np.arange(3, dtype=np.int32)
    assert tokenize(other_dtype) != tokenize(frame)
    renamed = same.copy()
    renamed.at[2, "name"] = "z"  # a string column keeps dask's own token, which follows it too
    assert tokenize(renamed) != tokenize(frame)
