"""Item-side fields from a vocabulary's catalogue (events.catalogue, training.item_embedding): an
item's vector is its id embedding plus its fields' embeddings, so an item nobody engaged with
lands near the items of its category; a model without a catalogue is the model of before."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from events.catalogue import read_catalogue
from events.contract import conform
from serving.service.encoder import item_table, load_weights, model_config, model_state
from training.data import DataConfig
from training.loss import LossConfig
from training.model import PinRec, PinRecConfig
from training.module import OptimConfig
from training.train import TrainConfig, load_model, pretrain

ENGAGED = {"a": range(1, 11), "b": range(11, 21)}  # items each group of users engages with
NEVER_ENGAGED = {21: "a", 22: "a", 23: "b", 24: "b"}  # shown to everyone alike, engaged by nobody


def _shop_log(n_users: int = 40, days: int = 3, seed: int = 0) -> pd.DataFrame:
    """Users 0.. of group a (even) engage with items 1-10, of group b (odd) with 11-20; every
    session also shows the four never-engaged items, the same to both groups."""
    rng = np.random.default_rng(seed)
    start, rows, session = datetime(2026, 3, 1, tzinfo=UTC), [], 0
    for day in range(days):
        for user in range(n_users):
            pool = list(ENGAGED["a" if user % 2 == 0 else "b"])
            for s in range(3):
                session += 1
                ts = start + timedelta(days=day, hours=2 * s + user / n_users)
                shown = [*rng.choice(pool, 4, replace=False).tolist(), *NEVER_ENGAGED]
                for i, item in enumerate(shown):
                    rows.append((user, item, "homefeed", "impression", ts + timedelta(seconds=i), session))
                for j, item in enumerate(shown[:2]):
                    rows.append((user, item, "homefeed", "click", ts + timedelta(seconds=10 + j), session))
    columns = ["user_id", "item_id", "surface", "outcome", "event_ts", "session_id"]
    return conform(pd.DataFrame(rows, columns=columns))


def _catalogue(tmp_path):
    items = [*range(1, 25)]
    category = ["a" if i in ENGAGED["a"] else "b" if i in ENGAGED["b"] else NEVER_ENGAGED[i] for i in items]
    path = tmp_path / "products.csv"
    pd.DataFrame({"item_id": items, "category": category}).to_csv(path, index=False)
    return read_catalogue(path, "item_id", ("category",))


def _train(events, out_dir, catalogue=None):
    return pretrain(
        events,
        out_dir,
        PinRecConfig(n_items=0, d_model=16, n_layers=1, n_heads=2, max_len=20, dropout=0.0),
        DataConfig(max_len=20, batch_size=16, seed=0),
        LossConfig(full_softmax=True),
        OptimConfig(lr=5e-3, warmup_steps=0),
        TrainConfig(max_epochs=8, threads=1, progress_bar=False),
        catalogue=catalogue,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catalogue")
    return _train(_shop_log(), tmp / "run", _catalogue(tmp))


def test_never_engaged_items_score_for_the_users_of_their_category(trained):
    model = trained.model.eval()
    index = {int(item): i for i, item in enumerate(model.item_ids.tolist())}
    vectors = model.item_embeddings().detach()
    a1, a2, b1, b2 = (vectors[index[i]] for i in NEVER_ENGAGED)
    # the two never-engaged items of a category sit closer together than across categories
    # (without the catalogue, measured on this log: 0.76 vs 0.65, 0.78 vs 0.46)
    assert float(a1 @ a2) > float(a1 @ b1) + 0.5
    assert float(b1 @ b2) > float(b2 @ a2) + 0.5
    # and the users of a category score them above the other category's (without the catalogue
    # they do not: the items' id rows learn nothing that tells them apart)
    for user_items, mine, theirs in (([1, 2, 3, 4], (21, 22), (23, 24)), ([11, 12, 13, 14], (23, 24), (21, 22))):
        items = torch.tensor([[index[i] for i in user_items]])
        zeros = torch.zeros_like(items)
        batch = {"items": items, "outcomes": zeros + 1, "surfaces": zeros, "ts_days": zeros.float()}
        scores = model.score_all({**batch, "log_gap": zeros.float()})[0]
        assert min(scores[index[i]] for i in mine) > max(scores[index[i]] for i in theirs)


def test_the_catalogue_travels_with_the_saved_model(trained, tmp_path):
    model = load_model(trained.out_dir)  # what fine-tuning and publication read: config and weights
    assert model.cfg.catalogue == (("category", ("a", "b")),)
    assert np.array_equal(item_table(model)[0], item_table(trained.model)[0])
    # what serving loads: the manifest's config (JSON) and model.pt, without the catalogue file
    manifest_config = json.loads(json.dumps(model_config(model)))
    assert manifest_config["catalogue"] == [["category", ["a", "b"]]]
    torch.save(model_state(model), tmp_path / "model.pt")
    served = load_weights(manifest_config, str(tmp_path / "model.pt"))
    assert np.array_equal(item_table(served)[0], item_table(trained.model)[0])
    codes = model.item_emb.field_codes[0].tolist()
    items = model.item_ids.tolist()
    assert codes[0] == 0  # padding
    category = {**{i: "a" for i in ENGAGED["a"]}, **{i: "b" for i in ENGAGED["b"]}, **NEVER_ENGAGED}
    assert codes[1:] == [{"a": 2, "b": 3}[category[item]] for item in items[1:]]


def test_an_item_missing_from_the_catalogue_gets_the_unknown_value(tmp_path):
    catalogue = _catalogue(tmp_path)
    codes = catalogue.codes_for(np.array([-1, 1, 11, 999]))
    assert codes.tolist() == [[0, 2, 3, 1]]


def test_a_model_without_a_catalogue_has_exactly_the_parameters_of_before():
    # fingerprints of this configuration's state at seed 0, taken with the code before catalogues
    torch.manual_seed(0)
    cfg = PinRecConfig(
        n_items=50,
        d_model=16,
        n_layers=1,
        n_heads=2,
        max_len=8,
        rank_outcomes=("click", "save"),
        exposure_bias=True,
        n_queries=3,
    )
    state = PinRec(cfg).state_dict()
    names = ",".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    values = b"".join(v.detach().float().numpy().tobytes() for v in state.values())
    assert len(state) == 56
    assert hashlib.sha256(names.encode()).hexdigest()[:16] == "7f9efed65dc4866f"
    assert hashlib.sha256(values).hexdigest()[:16] == "0ce618150c4c41ef"
    assert "catalogue" not in cfg.to_dict() and "catalogue" not in repr(cfg)
