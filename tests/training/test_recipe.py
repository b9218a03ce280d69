"""The lifecycle's training recipe: runs sized in steps, items learned from what sessions show
together, an exposure term learned with the engagements (or fixed at the log's impression shares)
and left out of what is served."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from serving.service.encoder import UserSequence, item_table
from tests.helpers import SMALL_WORLD
from training.cooccurrence import CoImpressions, co_impression_loss, distinct_session_items
from training.data import build_sequences, build_vocab, item_log_popularity
from training.exposure import impression_log_share
from training.model import PinRec, PinRecConfig
from training.plan import TrainingPlan
from training.steps import size_run
from training.train import pretrain
from world.policy_loop.models import loaded_version
from world.simulator import SimulatedWorld


@pytest.fixture(scope="module")
def world_events():
    world = SimulatedWorld(SMALL_WORLD)
    return world, pd.concat([world.day(d) for d in world.days()], ignore_index=True)


def test_a_warm_up_longer_than_the_run_is_rescaled_and_said():
    size = size_run(steps_per_epoch=15, epochs=3, warmup_steps=100, max_warmup_fraction=0.1)
    assert (size.epochs, size.total_steps, size.warmup_steps) == (3, 45, 4)
    assert len(size.notes) == 1 and "warm-up of 100 steps rescaled to 4" in size.notes[0]


def test_a_run_under_its_minimum_steps_gets_more_epochs():
    size = size_run(steps_per_epoch=15, epochs=3, warmup_steps=10, min_steps=100, max_warmup_fraction=0.5)
    assert (size.epochs, size.total_steps, size.warmup_steps) == (7, 105, 10)
    assert "training 7 epochs (105 steps)" in size.notes[0]


def test_a_warm_up_longer_than_the_run_is_said_when_kept():
    size = size_run(steps_per_epoch=15, epochs=3, warmup_steps=100)
    assert size.warmup_steps == 100 and "longer than the run's 45 steps" in size.notes[0]


def test_a_run_over_its_step_budget_stops_at_the_budget_and_says_so():
    # a surface's days of a 10^6-event world: ~580 batches an epoch, fine-tuning's budget 200
    size = size_run(
        steps_per_epoch=580, epochs=1, warmup_steps=10, min_steps=60, max_warmup_fraction=0.1, max_steps=200
    )
    assert (size.epochs, size.total_steps, size.warmup_steps) == (1, 200, 10)
    assert "over the budget of 200: training 200 steps" in size.notes[0]
    # a week of the embedded world is under the budget: nothing changes
    assert size_run(steps_per_epoch=55, epochs=1, warmup_steps=10, min_steps=60, max_steps=200).total_steps == 110
    assert (
        TrainingPlan().finetune_train_config(TrainingPlan().configs()[3]).max_steps == TrainingPlan.finetune_max_steps
    )


def test_a_step_budget_under_the_minimum_is_refused():
    with pytest.raises(ValueError, match="at least min_steps"):
        size_run(steps_per_epoch=15, epochs=1, warmup_steps=10, min_steps=60, max_steps=50)


def test_a_run_without_a_step_is_refused():
    with pytest.raises(ValueError, match="no training batch"):
        size_run(steps_per_epoch=0, epochs=3, warmup_steps=10)


def test_co_impression_pairs_are_two_items_of_one_session(world_events):
    _, events = world_events
    vocab = build_vocab(events)
    co = CoImpressions.from_events(events, vocab)
    a, p = co.pairs(2000, np.random.default_rng(0))
    assert (a != p).all() and a.min() >= 1 and p.max() <= len(vocab) - 1
    sessions = events.assign(idx=np.searchsorted(vocab[1:], events["item_id"].to_numpy()) + 1)
    together = set(zip(sessions["session_id"], sessions["idx"]))
    by_item = sessions.groupby("idx")["session_id"].apply(set)
    assert all(by_item[x] & by_item[y] for x, y in zip(a[:200], p[:200]))
    assert len(together) >= len(co)


def test_items_seeded_from_co_impressions_sit_near_items_of_their_topic(world_events):
    world, events = world_events
    vocab = build_vocab(events)
    E = torch.nn.functional.normalize(CoImpressions.from_events(events, vocab).seed_table(16)[1:], dim=1)
    sim = E @ E.T
    sim.fill_diagonal_(-2)
    topic = world.item_topic[vocab[1:]]
    purity = (topic[sim.topk(10, dim=1).indices.numpy()] == topic[:, None]).mean()
    assert purity > 3 / SMALL_WORLD.n_topics  # chance: 1 / n_topics (a test assertion, never a training input)


def test_the_co_impression_loss_prefers_the_positive():
    E = torch.nn.functional.normalize(torch.randn(11, 8), dim=1)
    ids = torch.arange(1, 11)
    matched = co_impression_loss(lambda i: E[i], ids, ids, 0.1)
    shuffled = co_impression_loss(lambda i: E[i], ids, ids.roll(1), 0.1)
    assert matched < shuffled


def _pretrain_small(events, tmp_path, **changes):
    plan = TrainingPlan(d_model=16, layers=1, batch_size=16, pretrain_epochs=1, pretrain_min_steps=30, threads=1)
    plan = replace(plan, **changes)
    model_cfg, data_cfg, loss_cfg, train_cfg = plan.configs()
    return pretrain(events, tmp_path, model_cfg, data_cfg, loss_cfg, plan.optim_config("pretrain"), train_cfg)


def _served_without_the_exposure_term(model) -> None:
    """What is served (the item table and <q, e> / T) is the same whatever the exposure term holds."""
    vectors, _ = item_table(model)
    zeros = torch.zeros(1, 3)
    batch = {"items": torch.tensor([[1, 2, 3]]), "outcomes": zeros.long() + 1, "surfaces": zeros.long()}
    batch.update(ts_days=zeros, log_gap=zeros)
    before = model.score_all(batch)
    with torch.no_grad():
        model.exposure.add_(torch.randn_like(model.exposure) * 5)
    assert np.array_equal(item_table(model)[0], vectors)
    assert torch.equal(model.score_all(batch), before)


def test_the_lifecycle_plan_learns_the_exposure_term_and_serves_without_it(world_events, tmp_path, capsys):
    _, events = world_events
    result = _pretrain_small(events, tmp_path)
    assert any("warm-up of 100 steps rescaled" in note for note in result.run_size)
    assert "warm-up of 100 steps rescaled" in capsys.readouterr().out
    model = result.model
    vocab = model.item_ids.numpy()
    start = item_log_popularity(build_sequences(events, vocab)).numpy()[1:]  # where training starts it
    exposure = model.exposure.detach().numpy()[1:]
    assert model.exposure.requires_grad
    assert np.abs(exposure - (start - start.mean())).max() > 1e-2  # it moved: learned
    _served_without_the_exposure_term(model)


def test_an_exposure_term_from_impressions_is_fixed_at_their_shares_and_not_served(world_events, tmp_path):
    _, events = world_events
    model = _pretrain_small(events, tmp_path, exposure_from_impressions=True).model
    vocab = model.item_ids.numpy()
    # fixed at the log's impression shares through training: the vectors learn P(engage | shown)
    assert not model.exposure.requires_grad
    assert torch.allclose(model.exposure, impression_log_share(events, vocab))
    shown = events.drop_duplicates(["session_id", "item_id"])["item_id"].to_numpy()
    shown = np.bincount(np.searchsorted(vocab[1:], shown), minlength=len(vocab) - 1)
    assert np.corrcoef(model.exposure.detach().numpy()[1:], np.log1p(shown))[0, 1] > 0.9
    _served_without_the_exposure_term(model)


def test_exposure_is_learned_with_the_engagements_when_the_log_has_no_impressions(world_events, tmp_path):
    _, events = world_events
    engagements = events[events["outcome"] != "impression"].reset_index(drop=True)
    assert impression_log_share(engagements, build_vocab(engagements)) is None
    model = _pretrain_small(engagements, tmp_path).model
    vocab = model.item_ids.numpy()
    start = item_log_popularity(build_sequences(engagements, vocab)).numpy()[1:]  # where training starts it
    exposure = model.exposure.detach().numpy()[1:]
    assert model.exposure.requires_grad
    assert np.abs(exposure - (start - start.mean())).max() > 1e-2  # it moved: learned


def test_a_model_without_an_exposure_term_loads_the_checkpoints_of_before():
    model = PinRec(PinRecConfig(n_items=10, d_model=8, n_layers=1, n_heads=2, max_len=5))
    assert model.exposure is None and "exposure" not in model.state_dict()
    assert model.exposure_logits(torch.tensor([1, 2])).abs().sum() == 0


def test_a_search_query_is_learned_from_the_log_and_pulls_search_results_to_its_topic(world_events, tmp_path):
    world, events = world_events
    model = _pretrain_small(events, tmp_path, pretrain_min_steps=60).model
    logged = np.unique(events["query_id"].dropna().to_numpy(np.int64))
    assert model.search_emb is not None and model.cfg.n_queries == len(logged)
    assert np.array_equal(model.query_ids.numpy()[1:], logged)
    version = loaded_version(model, "search", "v1")
    seq = UserSequence.empty()
    plain = [c.item for c in version.retrieve(seq, 20).candidates]
    assert [c.item for c in version.retrieve(seq, 20, query_id=10**9).candidates] == plain  # unknown: no shift
    in_topic = []
    for query in logged[:12]:
        items = [c.item for c in version.retrieve(seq, 20, query_id=int(query)).candidates]
        assert items != plain
        # a test assertion on the world's truth (never a training input): the query's topic
        in_topic.append((world.item_topic[items] == world.query_topic[query]).mean())
    assert np.mean(in_topic) > 2 / SMALL_WORLD.n_topics  # chance: 1 / n_topics


def test_a_unit_trunk_head_adds_its_term_to_the_normalised_hidden_state():
    torch.manual_seed(0)
    h, outcome, offset = torch.randn(4, 8) * 3, torch.tensor([0, 1, 2, 3]), torch.zeros(4, dtype=torch.long)
    for unit in (False, True):
        model = PinRec(PinRecConfig(n_items=10, d_model=8, n_layers=1, n_heads=2, max_len=5, unit_trunk=unit))
        z = torch.cat([h, model.head_outcome(outcome), model.head_offset(offset)], dim=-1)
        trunk = torch.nn.functional.normalize(h, dim=-1) if unit else h
        expected = torch.nn.functional.normalize(trunk + model.head(z), dim=-1)
        assert torch.allclose(model.query(h, outcome, offset), expected)


def test_half_of_the_search_targets_are_trained_without_their_query(world_events):
    from training.data import DataConfig, TrainWindows

    _, events = world_events
    seqs = build_sequences(events, build_vocab(events))
    cfg = DataConfig(max_len=20, batch_size=256)
    batch = TrainWindows(seqs, cfg)[0]
    with_query = (batch["tgt_query"] > 0).sum().item()
    without = TrainWindows(seqs, replace(cfg, query_dropout=0.0))[0]
    all_queries = (without["tgt_query"] > 0).sum().item()
    assert all_queries > 20 and 0.3 < with_query / all_queries < 0.7
    assert torch.equal(batch["pos_ids"], without["pos_ids"])  # the other targets stay as they were


def test_distinct_session_items_are_the_unique_rows_sorted_by_session_then_item():
    rng = np.random.default_rng(3)
    session = rng.integers(0, 10**12, 50)[rng.integers(0, 50, 5_000)]
    item = rng.integers(1, 300, 5_000)
    pairs = distinct_session_items(session, item)
    assert np.array_equal(pairs, np.unique(np.stack([session, item], 1), axis=0))
    assert distinct_session_items(np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0, 2)


def test_every_parameter_steps_in_one_fused_adamw_on_the_cpu():
    from training.loss import LossConfig
    from training.module import OptimConfig, PinRecModule

    module = PinRecModule(PinRecConfig(n_items=50), LossConfig(), OptimConfig(lr=1e-3, warmup_steps=0))
    opt = module.configure_optimizers()["optimizer"]
    stepped = {id(p) for group in opt.param_groups for p in group["params"]}
    assert opt.defaults["fused"] is True
    assert stepped == {id(p) for p in module.parameters()}
