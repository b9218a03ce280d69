"""The ranking head (UniPinRec): causality, keys/values reused from the retrieval encode, blended
examples and masked action modeling, and that a model without it is the model of before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from events.contract import BUILTIN_CODES, OUTCOMES, EventCodes
from tests.helpers import SMALL_WORLD
from training.data import DataConfig, PinRecDataModule, TrainWindows, build_sequences
from training.loss import LossConfig
from training.model import KVCache, PinRec, PinRecConfig, rank_flops
from training.module import OptimConfig, PinRecModule
from training.ranking import RankingConfig, build_slates, prepare_ranking, rank_outcomes_for
from training.train import TrainConfig, pretrain
from world.simulator import SimulatedWorld

V, B, L = 50, 3, 12
RANKED = ("click", "save", "hide")


def _model(rank_outcomes=RANKED, seed: int = 0) -> PinRec:
    torch.manual_seed(seed)
    cfg = PinRecConfig(
        n_items=V, d_model=32, n_layers=2, n_heads=2, max_len=L, dropout=0.0, rank_outcomes=rank_outcomes
    )
    return PinRec(cfg).eval()


def _batch(seed: int = 0, lengths=(12, 9, 6)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, V + 1, (B, L), generator=g)
    for b, n in enumerate(lengths):
        items[b, n:] = 0
    return {
        "items": items,
        "outcomes": torch.randint(1, 3, (B, L), generator=g),
        "surfaces": torch.randint(0, 3, (B, L), generator=g),
        "ts_days": 20_000 + torch.rand(B, L, generator=g).cumsum(1),
        "log_gap": torch.rand(B, L, generator=g) * 5,
    }


def test_a_model_without_ranking_is_unchanged_and_a_ranking_model_shares_its_retrieval_weights():
    plain, ranked = _model(()), _model()
    assert plain.ranker is None and not plain.cfg.ranking
    assert not any(k.startswith("ranker.") for k in plain.state_dict())
    shared = plain.state_dict()
    assert all(torch.equal(v, ranked.state_dict()[k]) for k, v in shared.items())  # same seed, same weights
    b = _batch()
    assert torch.equal(plain.encode(**b), ranked.encode(**b))
    # an old config (no rank_outcomes key) loads as retrieval only; a new one round-trips
    old = {k: v for k, v in plain.cfg.to_dict().items() if k != "rank_outcomes"}
    assert PinRecConfig.from_dict(old).rank_outcomes == ()
    assert PinRecConfig.from_dict(ranked.cfg.to_dict()).rank_outcomes == RANKED
    with pytest.raises(ValueError, match="no ranking head"):
        plain.rank(
            KVCache([], [], torch.zeros(1, dtype=torch.long)),
            torch.ones(1, 1, dtype=torch.long),
            torch.zeros(1, 1, dtype=torch.long),
            torch.zeros(1, 32),
        )


def test_ranking_output_does_not_change_when_future_history_positions_change():
    m = _model()
    b = _batch(lengths=(12, 12, 12))
    cand = torch.randint(1, V + 1, (B, 4), generator=torch.Generator().manual_seed(9))
    surf = torch.zeros(B, 4, dtype=torch.long)
    h, kv = m.encode(**b, return_cache=True)
    for p in (0, 1, 5, 11):
        prefix = torch.full((B, 4), p)
        h_last = h[:, max(p - 1, 0)]
        want = m.rank(kv, cand, surf, h_last, prefix)
        changed = {k: v.clone() for k, v in b.items()}
        g = torch.Generator().manual_seed(p + 1)
        changed["items"][:, p:] = torch.randint(1, V + 1, (B, L - p), generator=g)
        changed["outcomes"][:, p:] = 3 - changed["outcomes"][:, p:]
        changed["ts_days"][:, p:] += 50.0
        h2, kv2 = m.encode(**changed, return_cache=True)
        got = m.rank(kv2, cand, surf, h2[:, max(p - 1, 0)], prefix)
        assert torch.allclose(got, want, atol=1e-5), f"a candidate after {p} positions saw a later one"
        if p > 1:  # the positions before it do count
            earlier = {k: v.clone() for k, v in b.items()}
            earlier["items"][:, 0] = (earlier["items"][:, 0] % V) + 1
            h3, kv3 = m.encode(**earlier, return_cache=True)
            assert not torch.allclose(m.rank(kv3, cand, surf, h3[:, p - 1], prefix), want, atol=1e-4)


def test_reused_keys_and_values_give_the_same_ranking_as_a_fresh_encode():
    m = _model()
    b = _batch(lengths=(12, 9, 6))
    cand = torch.randint(1, V + 1, (B, 7), generator=torch.Generator().manual_seed(5))
    surf = torch.randint(0, 3, (B, 7), generator=torch.Generator().manual_seed(6))
    n = (b["items"] > 0).sum(1)
    h, kv = m.encode(**b, return_cache=True)
    fresh = m.rank(kv, cand, surf, h[torch.arange(B), n - 1])
    # the history arrives in two pieces: the cache of the first, extended by the second
    cut = [5, 4, 3]
    head = {k: torch.zeros((B, max(cut)), dtype=v.dtype) for k, v in b.items()}
    tail = {k: torch.zeros((B, L), dtype=v.dtype) for k, v in b.items()}
    for r in range(B):
        for k, v in b.items():
            head[k][r, : cut[r]] = v[r, : cut[r]]
            tail[k][r, : n[r] - cut[r]] = v[r, cut[r] : n[r]]
    _, cache = m.encode(**head, return_cache=True)
    h2, cache = m.encode(**tail, cache=cache, return_cache=True)
    last = torch.stack([h2[r, n[r] - cut[r] - 1] for r in range(B)])
    reused = m.rank(cache, cand, surf, last)
    assert torch.allclose(reused, fresh, atol=1e-5)
    # row by row, restacked (what serving does with users' cached states)
    restacked = m.rank(KVCache.stack(cache.rows()), cand, surf, last)
    assert torch.allclose(restacked, fresh, atol=1e-5)


def test_rank_flops_grow_with_candidates_and_history():
    cfg = _model().cfg
    per_user = rank_flops(cfg, 0, 100)  # the user projection, once per history
    assert per_user > 0
    assert rank_flops(cfg, 200, 100) - per_user == pytest.approx(200 * (rank_flops(cfg, 1, 100) - per_user))
    assert rank_flops(cfg, 10, 200) > rank_flops(cfg, 10, 10)


# -------------------------------------------------------------------------------- blended examples


@pytest.fixture(scope="module")
def small_world_events() -> pd.DataFrame:
    world = SimulatedWorld(SMALL_WORLD)
    return pd.concat([world.day(d) for d in world.days()], ignore_index=True)


def test_slates_are_the_sessions_impressions_with_their_outcomes_and_the_history_before(small_world_events):
    ev = small_world_events
    seqs = build_sequences(ev)
    ranked = rank_outcomes_for(BUILTIN_CODES)
    assert ranked == ("click", "save", "hide", "rating_1", "rating_2", "rating_3", "rating_4", "rating_5")
    slates = build_slates(ev, seqs, BUILTIN_CODES, ranked)
    sessions = ev[ev["outcome"] == "impression"].groupby(["user_id", "session_id"]).ngroups
    assert len(slates) == sessions
    # one session checked by hand
    s = 17
    user = seqs.user_ids[slates.user[s]]
    rows = ev[ev["user_id"] == user]
    session_ids = sorted(rows.loc[rows["outcome"] == "impression", "session_id"].unique())
    starts = {sid: rows.loc[rows["session_id"] == sid, "event_ts"].min() for sid in session_ids}
    match = [
        sid
        for sid in session_ids
        if sorted(seqs.vocab[slates.items[slates.ptr[s] : slates.ptr[s + 1]]].tolist())
        == sorted(rows.loc[rows["session_id"] == sid, "item_id"].unique().tolist())
    ]
    assert match, "the slate is one of the user's sessions"
    sid = match[0]
    session = rows[rows["session_id"] == sid]
    # its history: the user's engagements strictly before the session's first event
    engaged = rows[rows["outcome"].isin(["click", "save"]) & (rows["event_ts"] < starts[sid])]
    u = slates.user[s]
    assert slates.prefix[s] - seqs.ptr[u] == len(engaged)
    for item, label in zip(
        slates.items[slates.ptr[s] : slates.ptr[s + 1]], slates.labels[slates.ptr[s] : slates.ptr[s + 1]]
    ):
        got = set(session.loc[session["item_id"] == seqs.vocab[item], "outcome"]) - {"impression"}
        assert {ranked[j] for j in np.nonzero(label)[0]} == got


def test_a_log_without_impressions_trains_the_retrieval_head_only_and_says_so(small_world_events):
    no_impressions = EventCodes(
        outcomes=OUTCOMES, surfaces=BUILTIN_CODES.surfaces, engaged=BUILTIN_CODES.engaged, impression=None, negative=()
    )
    assert rank_outcomes_for(no_impressions) == (
        "click",
        "save",
        "rating_1",
        "rating_2",
        "rating_3",
        "rating_4",
        "rating_5",
    )
    ev = small_world_events[small_world_events["outcome"] != "impression"]
    dm = PinRecDataModule.from_events(ev, DataConfig(codes=no_impressions))
    cfg = PinRecConfig(n_items=dm.n_items, rank_outcomes=RANKED)
    dm2, cfg2, note = prepare_ranking(dm, ev, cfg, RankingConfig())
    assert dm2.slates is None and cfg2.rank_outcomes == () and not note["ranking"]
    assert "no impression outcome" in note["reason"]
    # the vocabulary has one, but the log shows none
    dm = PinRecDataModule.from_events(ev, DataConfig())
    _, cfg3, note = prepare_ranking(dm, ev, cfg, RankingConfig())
    assert cfg3.rank_outcomes == () and "no sessions with impressions" in note["reason"]


def test_windows_carry_their_slates_and_masked_positions_and_keep_their_retrieval_targets(small_world_events):
    ev = small_world_events
    dcfg = DataConfig(max_len=20, batch_size=16, offsets=("next", "session"))
    dm = PinRecDataModule.from_events(ev, dcfg)
    cfg = PinRecConfig(n_items=dm.n_items, max_len=20, rank_outcomes=rank_outcomes_for(BUILTIN_CODES))
    dm, _, note = prepare_ranking(dm, ev, cfg, RankingConfig(max_slates=4, max_slate_items=8))
    assert note["ranking"] and note["slates"] > 0
    plain = TrainWindows(dm.train_seqs, dcfg)
    blended = TrainWindows(dm.train_seqs, dcfg, dm.slates)
    a, b = plain[0], blended[0]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key  # the retrieval part of the batch is unchanged
    assert b["slate_items"].shape[1] <= 4 and b["slate_items"].shape[2] <= 8
    n_inputs = (b["items"] > 0).sum(1)
    has = b["slate_items"][:, :, 0] > 0
    # a slate's history ends inside its window, and masked positions are real positions
    assert bool((b["slate_prefix"][has] <= n_inputs[:, None].expand_as(has)[has]).all())
    real = b["mam_pos"] >= 0
    assert bool((b["mam_pos"][real] < n_inputs[:, None].expand_as(real)[real]).all())
    assert int(has.sum()) > 0 and int(real.sum()) > 0
    # every slate of the data is in exactly one window, except those after a user's last input
    # (the last engagement is only a target) and those of users too short for a window
    sampler, seen = dm.slates, []
    for start, n in zip(blended.starts.tolist(), blended.n_inputs.tolist()):
        seen.extend(sampler.window_slates(start, n).tolist())
    assert len(seen) == len(set(seen))
    ends = dm.train_seqs.ptr[sampler.slates.user + 1]
    usable = (sampler.slates.prefix < ends) & (dm.train_seqs.lengths[sampler.slates.user] >= 2)
    assert set(seen) == set(np.nonzero(usable)[0].tolist())


@pytest.mark.slow
def test_the_masked_action_loss_decreases_on_a_small_world(small_world_events, tmp_path):
    ev = small_world_events
    ranked = rank_outcomes_for(BUILTIN_CODES)
    model_cfg = PinRecConfig(
        n_items=0, d_model=32, n_layers=2, n_heads=2, max_len=50, dropout=0.0, rank_outcomes=ranked
    )
    data_cfg = DataConfig(batch_size=32, max_len=50)

    def mam_and_slate_loss(model: PinRec) -> tuple[float, float]:
        dm = PinRecDataModule.from_events(ev, data_cfg, vocab=model.item_ids.numpy())
        dm = dm.with_config(codes=dm.cfg.codes)
        dm, _, note = prepare_ranking(dm, ev, model.cfg, RankingConfig(mam_fraction=1.0))
        module = PinRecModule(model.cfg, LossConfig(), OptimConfig(), engaged_columns=tuple(note["engaged_columns"]))
        module.model.load_state_dict(model.state_dict())
        module.eval()
        windows = TrainWindows(dm.train_seqs, data_cfg, dm.slates)
        mam, slate = [], []
        with torch.no_grad():
            for i in range(len(windows)):
                module.training_loss(windows[i])
                mam.append(float(module._rank_parts["mam"]))
                slate.append(float(module._rank_parts["slate"]))
        return float(np.mean(mam)), float(np.mean(slate))

    torch.manual_seed(0)
    untrained = PinRec(PinRecConfig(**{**model_cfg.to_dict(), "n_items": int(build_sequences(ev).n_items)}))
    before = mam_and_slate_loss(untrained)
    result = pretrain(
        ev,
        tmp_path / "run",
        model_cfg,
        data_cfg,
        optim_cfg=OptimConfig(lr=3e-3, warmup_steps=5),
        train_cfg=TrainConfig(max_epochs=6, progress_bar=False, threads=2),
    )
    assert result.ranking["ranking"] and result.ranking["slates"] > 0
    after = mam_and_slate_loss(result.model)
    assert after[0] < before[0] - 0.2, (before, after)
    assert after[1] < before[1], (before, after)
