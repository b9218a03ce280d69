"""A deployment's vocabulary (events/vocabulary.py): the file is checked, codes extend a ledger and
never change meaning, a value outside the vocabulary is quarantined naming the file, the feature
tables and Feast views follow the codes, the model's tables follow them, the API lists them as
enums, and a version whose codes disagree with the features is refused at load."""

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from events.contract import BUILTIN_CODES, OUTCOMES, SURFACES, EventCodes
from events.ingest import validate_events
from events.table import EventTable
from events.vocabulary import (
    VocabularyError,
    VocabularyMismatchError,
    builtin_vocabulary,
    load_vocabulary,
    read_ledger,
    record_codes,
)

SHOP = """
surfaces: [web, app]
outcomes: [view, cart, purchase, return]
engaged: [cart, purchase]
impression: view
negative: [return]
weights: {cart: 1, purchase: 2}
surface_weights: {app: {purchase: 1}}
"""
DAY = date(2026, 3, 2)


def _write(tmp_path, text: str, name: str = "shop.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _event(i: int, surface: str = "web", outcome: str = "cart", user: int = 1, item: int | None = None) -> dict:
    ts = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + timedelta(minutes=i)
    return {
        "user_id": user,
        "item_id": 100 + i if item is None else item,
        "surface": surface,
        "outcome": outcome,
        "event_ts": pd.Timestamp(ts),
        "session_id": user,
        "query_id": pd.NA,
    }


def test_a_vocabulary_file_reads_into_its_fields_and_default_codes_follow_the_file(tmp_path):
    vocab = load_vocabulary(_write(tmp_path, SHOP))
    assert vocab.surfaces == ("web", "app") and vocab.engaged == ("cart", "purchase")
    assert vocab.impression == "view" and vocab.negative == ("return",)
    assert vocab.codes.mapping() == {
        "outcomes": {"view": 0, "cart": 1, "purchase": 2, "return": 3},
        "surfaces": {"web": 0, "app": 1},
    }
    assert vocab.weights_for("web") == {"cart": 1.0, "purchase": 2.0}
    assert vocab.weights_for("app") == {"purchase": 1.0}
    assert vocab.guarded == ("cart", "purchase") and vocab.drift == ("cart", "purchase", "return")


@pytest.mark.parametrize(
    "text, message",
    [
        ("surfaces: [web]\noutcomes: [buy]\nengaged: [buy]\nimpresion: buy\n", "unknown fields ['impresion']"),
        ("surfaces: [web]\noutcomes: [buy]\nengaged: [click]\n", "`engaged` names ['click']"),
        ("surfaces: [web]\noutcomes: [view, buy]\nengaged: [buy, view]\nimpression: view\n", "cannot be engaged"),
        ("surfaces: [Web]\noutcomes: [buy]\nengaged: [buy]\n", "invalid names ['Web']"),
        ("surfaces: [web]\noutcomes: [engagement, buy]\nengaged: [buy]\n", "item_stats columns ['engagements']"),
        ("surfaces: [web]\noutcomes: [buy]\nengaged: [buy]\nweights: {buy: -1}\n", "must be a number >= 0"),
        ("outcomes: [buy]\nengaged: [buy]\n", "`surfaces` is missing"),
    ],
    ids=[
        "typo",
        "engaged-unknown",
        "impression-engaged",
        "upper-case",
        "column-clash",
        "negative-weight",
        "no-surfaces",
    ],
)
def test_a_broken_vocabulary_is_refused_naming_the_file_and_the_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(VocabularyError, match="vocabulary .*shop.yaml") as err:
        load_vocabulary(path)
    assert message in str(err.value)


def test_codes_are_recorded_and_never_renumbered_when_the_file_changes(tmp_path):
    ledger = tmp_path / "feast" / "codes.json"
    first = load_vocabulary(_write(tmp_path, SHOP), ledger)
    assert record_codes(first.codes, ledger, first.label)
    # the file reordered, one outcome inserted in the middle, one removed, one surface added first
    changed = _write(
        tmp_path,
        "surfaces: [kiosk, app, web]\noutcomes: [wishlist, purchase, cart, view]\n"
        "engaged: [cart, purchase, wishlist]\nimpression: view\n",
        "shop2.yaml",
    )
    second = load_vocabulary(changed, ledger)
    assert second.codes.outcomes == ("view", "cart", "purchase", "return", "wishlist")  # return keeps code 3
    assert second.codes.surfaces == ("web", "app", "kiosk")
    assert record_codes(second.codes, ledger, second.label)
    assert read_ledger(ledger)["outcomes"] == second.codes.outcomes
    # the retired outcome is no longer accepted, but keeps its code (and its feature column)
    result = validate_events(pd.DataFrame([_event(0, outcome="return"), _event(1, surface="kiosk")]), DAY, second)
    assert len(result.good) == 1 and "outcome: isin" in result.quarantine["reason"][0]
    assert "returns" in second.codes.item_count_columns()


def test_pinned_codes_that_disagree_with_the_ledger_are_refused(tmp_path):
    ledger = tmp_path / "codes.json"
    vocab = load_vocabulary(_write(tmp_path, SHOP), ledger)
    record_codes(vocab.codes, ledger)
    pinned = _write(tmp_path, SHOP + "codes:\n  outcomes: [cart, view]\n", "pinned.yaml")
    with pytest.raises(
        VocabularyError,
        match=r"gives code 0 to 'cart', but the code ledger .*codes.json recorded "
        r"it for 'view'",
    ):
        load_vocabulary(pinned, ledger)
    other = EventCodes(outcomes=("cart", "view"), surfaces=("web",), engaged=("cart",), impression=None, negative=())
    with pytest.raises(VocabularyMismatchError, match="outcome code 0"):
        record_codes(other, ledger)


def test_a_value_outside_the_vocabulary_is_quarantined_with_a_reason_naming_the_file(tmp_path):
    path = _write(tmp_path, SHOP)
    vocab = load_vocabulary(path)
    rows = [_event(0), _event(1, surface="homefeed"), _event(2, outcome="click"), _event(3, outcome="view")]
    result = validate_events(pd.DataFrame(rows), DAY, vocab)
    assert len(result.good) == 2 and len(result.quarantine) == 2
    reasons = result.quarantine["reason"].tolist()
    assert reasons[0].startswith("surface: isin(('web', 'app')) of vocabulary ") and str(path) in reasons[0]
    assert reasons[1].startswith("outcome: isin(") and f"of vocabulary {path}" in reasons[1]


def test_the_shipped_vocabularies_keep_the_codes_the_data_always_had():
    """The simulated world's and MovieLens' feature tables and models are those of before
    vocabularies (same codes, same embedding sizes; checked byte for byte when they were added)."""
    simulated, movielens = builtin_vocabulary("simulated"), builtin_vocabulary("movielens-1m")
    for vocab in (simulated, movielens):
        assert vocab.codes.outcomes == OUTCOMES and vocab.codes.surfaces == SURFACES
    assert set(simulated.engaged) == {"click", "save"} and simulated.impression == "impression"
    assert simulated.codes.engaged_codes == [1, 2] and simulated.weights == {"click": 1.0, "save": 1.0}
    assert movielens.surfaces == ("homefeed",) and movielens.impression is None
    assert set(movielens.engaged) == {f"rating_{r}" for r in range(1, 6)}
    # what the built-in data counts as an engagement is unchanged where it has events
    assert set(simulated.engaged) | set(movielens.engaged) == set(BUILTIN_CODES.engaged)


def test_feature_tables_and_feast_views_follow_the_vocabulary(tmp_path):
    from feature_pipeline.store import (
        FeastSettings,
        apply_repo,
        feature_codes,
        open_store,
        write_offline_tables,
    )
    from feature_pipeline.tables import day_feature_tables

    vocab = load_vocabulary(_write(tmp_path, SHOP))
    rows = [
        _event(0, "web", "view", item=7),
        _event(1, "web", "cart", item=7),
        _event(2, "app", "view", item=8),
        _event(3, "app", "purchase", item=8),
        _event(4, "app", "return", item=8, user=2),
    ]
    good = validate_events(pd.DataFrame(rows), DAY, vocab).good
    table = EventTable(tmp_path / "lake")
    table.write_day(DAY, good, validate_events(pd.DataFrame(rows[:0]), DAY).quarantine)
    tables = day_feature_tables(table, DAY, vocab.codes)
    stats = tables["item_stats"].set_index("item_id")
    assert list(stats.columns) == [
        "views",
        "carts",
        "purchases",
        "returns",
        "engagements",
        "first_seen_us",
        "event_timestamp",
    ]
    assert stats.loc[8, ["views", "purchases", "returns", "engagements"]].tolist() == [1, 1, 1, 1]
    surface = tables["item_surface_stats"].set_index("item_id")
    assert surface.loc[7, "web_engagement_rate"] == 1.0 and surface.loc[8, "app_impressions"] == 1
    sequences = tables["user_sequence"].set_index("user_id")
    assert sequences.loc[1, "seq_outcomes"].tolist() == [1, 2] and sequences.loc[1, "seq_surfaces"].tolist() == [
        0,
        1,
    ]  # no views
    settings = FeastSettings(tmp_path / "feast")
    store = open_store(settings)
    apply_repo(store, vocab.codes, vocab.label)
    write_offline_tables(settings, DAY, tables)
    for view, df in tables.items():
        fields = [f.name for f in store.get_feature_view(view).features]
        assert fields == [c for c in df.columns if c not in ("user_id", "item_id", "event_timestamp")], view
    assert feature_codes(store) == {"outcomes": ["view", "cart", "purchase", "return"], "surfaces": ["web", "app"]}
    assert json.loads((tmp_path / "feast" / "codes.json").read_text())["outcomes"] == list(vocab.codes.outcomes)
    # applying the built-in vocabulary to the same store is refused: it would renumber the codes
    with pytest.raises(VocabularyMismatchError, match="outcome code 0 means 'impression'"):
        apply_repo(store)


def _shop_model(outcomes, surfaces=("web", "app"), seed=0):
    from training.model import PinRec, PinRecConfig

    torch.manual_seed(seed)
    model = PinRec(
        PinRecConfig(
            n_items=50,
            d_model=16,
            n_layers=1,
            n_heads=2,
            max_len=20,
            dropout=0.0,
            outcomes=tuple(outcomes),
            surfaces=tuple(surfaces),
        )
    )
    with torch.no_grad():
        model.item_ids[1:] += 1000
    return model.eval()


def test_the_model_tables_follow_the_codes():
    model = _shop_model(("view", "cart", "purchase", "return"))
    assert model.outcome_emb.num_embeddings == 4 and model.head_outcome.num_embeddings == 5
    assert model.surface_emb.num_embeddings == 2 and model.cfg.any_outcome == 4
    batch = {
        "items": torch.tensor([[3, 4]]),
        "outcomes": torch.tensor([[1, 2]]),
        "surfaces": torch.tensor([[0, 1]]),
        "ts_days": torch.zeros(1, 2),
        "log_gap": torch.tensor([[-1.0, 0.5]]),
    }
    queries = model.generate_queries(batch, [("cart", "next"), ("purchase", "next"), ("any", "next")])["queries"]
    assert queries.shape == (1, 3, 16) and not torch.allclose(queries[0, 0], queries[0, 1])
    with pytest.raises(ValueError):
        model.generate_queries(batch, [("click", "next")])


def test_the_api_lists_the_vocabulary_as_enums_and_refuses_other_names(tmp_path):
    from devstack.service import ServerThread, call
    from serving.service.app import create_app
    from serving.service.checks import checked_registry
    from serving.service.versions import VersionManager
    from storage.s3 import S3Settings

    vocab = load_vocabulary(_write(tmp_path, SHOP))
    idle = VersionManager(checked_registry(S3Settings(endpoint_url="http://127.0.0.1:9")), ["web"], tmp_path / "cache")
    app = create_app(idle, start_polling=False, vocabulary=vocab)
    schemas = app.openapi()["components"]["schemas"]
    request = schemas["RetrieveRequest"]["properties"]
    assert request["surface"]["enum"] == ["web", "app"]
    weights = next(o for o in request["outcome_weights"]["anyOf"] if o.get("type") == "object")
    assert weights["propertyNames"]["enum"] == ["cart", "purchase"]  # the engaged outcomes only
    event = schemas["RecentEvent"]["properties"]
    assert event["outcome"]["enum"] == ["view", "cart", "purchase", "return"]
    assert next(o for o in event["surface"]["anyOf"] if o.get("type") == "string")["enum"] == ["web", "app"]
    with ServerThread(app) as server:
        status, body, _ = call(server.host, server.port, "POST", "/v1/retrieve", {"user_id": 1, "surface": "homefeed"})
        assert status == 422 and "unknown surface 'homefeed'; known: ['web', 'app']" in body["error"]
        status, body, _ = call(
            server.host,
            server.port,
            "POST",
            "/v1/retrieve",
            {"user_id": 1, "surface": "web", "outcome_weights": {"click": 1}},
        )
        assert status == 422 and "unknown outcome(s) ['click']" in body["error"]
        # the vocabulary's negative is no retrieval weight: the allowed ones are its engaged outcomes
        status, body, _ = call(
            server.host,
            server.port,
            "POST",
            "/v1/retrieve",
            {"user_id": 1, "surface": "web", "outcome_weights": {"return": 1}},
        )
        assert status == 422 and "allowed: ['cart', 'purchase']" in body["error"], body


def test_a_version_whose_codes_disagree_with_the_features_is_refused_at_load(s3_server, tmp_path):
    from serving.registry.publish import publish_model
    from serving.service.checks import checked_registry
    from serving.service.retriever import LoadedVersion
    from serving.service.versions import VersionManager

    vocab = load_vocabulary(_write(tmp_path, SHOP))
    registry = checked_registry(s3_server.settings().with_prefix(f"vocab-{uuid.uuid4().hex[:8]}"))
    good, _ = publish_model(registry, "web", _shop_model(vocab.codes.outcomes), vocabulary=vocab)
    manifest = registry.manifest("web", good)
    assert manifest["config"]["vocabulary"]["outcomes"] == {"view": 0, "cart": 1, "purchase": 2, "return": 3}
    assert manifest["config"]["serving"]["outcome_weights"] == {"cart": 1.0, "purchase": 2.0}
    # a model trained when the codes were cart=0, view=1: its embeddings would read every view as a cart
    swapped = _shop_model(("cart", "view", "purchase", "return"), seed=1)
    other_vocab = load_vocabulary(
        _write(tmp_path, SHOP.replace("[view, cart, purchase, return]", "[cart, view, purchase, return]"), "old.yaml")
    )
    bad, _ = publish_model(registry, "web", swapped, vocabulary=other_vocab)
    features = {"outcomes": list(vocab.codes.outcomes), "surfaces": list(vocab.codes.surfaces)}
    with pytest.raises(
        VocabularyMismatchError,
        match=r"version web/.*: outcome code 0 means 'cart' there but "
        r"'view' in the features under /feast",
    ):
        LoadedVersion.from_local(registry.fetch("web", bad, tmp_path / "fetch"), features, "the features under /feast")
    loaded = LoadedVersion.from_local(registry.fetch("web", good, tmp_path / "fetch"), features)
    assert loaded.codes.engaged_codes == [1, 2]
    # the service: the champion with the disagreeing codes is refused, the earlier one keeps serving
    registry.promote("web", good)
    manager = VersionManager(registry, ["web"], tmp_path / "cache", feature_codes=features)
    manager.refresh()
    assert manager.loaded()["web"]["champion"] == good
    registry.promote("web", bad)
    manager.refresh()
    assert manager.loaded()["web"]["champion"] == good
    assert manager.load_failures[("web", bad, "VocabularyMismatchError")] == 1
    assert manager.errors["web"]["version"] == bad


def test_sequences_without_impressions_have_no_hard_negatives_and_train():
    from training.data import DataConfig, TrainWindows, build_sequences

    codes = EventCodes(
        outcomes=("purchase", "purchase_discounted"),
        surfaces=("store",),
        engaged=("purchase", "purchase_discounted"),
        impression=None,
        negative=(),
    )
    rows = [
        _event(i, "store", "purchase" if i % 3 else "purchase_discounted", user=i % 4, item=i % 9) for i in range(40)
    ]
    events = pd.DataFrame(rows)
    seqs = build_sequences(events, hard_negatives=True, codes=codes)
    assert len(seqs.items) == 40 and len(seqs.hard_items) == 0
    assert set(np.unique(seqs.outcomes)) == {0, 1}
    windows = TrainWindows(seqs, DataConfig(max_len=8, batch_size=4, n_hard=4, codes=codes, target_surface="store"))
    batch = windows[0]
    assert not batch["hard_mask"].any() and batch["tgt_valid"].any()
