"""PinRec model and loss: shapes, causality, switches, query budgets, loss maths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from events.contract import OUTCOMES
from training.loss import LossConfig, chunked_logsumexp, sampled_softmax_loss
from training.model import (
    ANY_OUTCOME,
    OFFSETS,
    KVCache,
    PinRec,
    PinRecConfig,
    encode_flops,
    fast_dropout,
)

V, B, L = 50, 3, 12


def _batch(seed: int = 0, lengths=(12, 7, 3)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, V + 1, (B, L), generator=g)
    for b, n in enumerate(lengths):
        items[b, n:] = 0
    return {
        "items": items,
        "outcomes": torch.randint(0, len(OUTCOMES), (B, L), generator=g),
        "surfaces": torch.randint(0, 3, (B, L), generator=g),
        "ts_days": 20_000 + torch.rand(B, L, generator=g).cumsum(1),
        "log_gap": torch.rand(B, L, generator=g) * 5,
    }


def _model(**kw) -> PinRec:
    torch.manual_seed(0)
    return PinRec(PinRecConfig(n_items=V, d_model=32, n_layers=2, n_heads=2, max_len=L, dropout=0.0, **kw)).eval()


def _encode(m: PinRec, b: dict) -> torch.Tensor:
    return m.encode(b["items"], b["outcomes"], b["surfaces"], b["ts_days"], b["log_gap"])


def test_forward_shapes_and_unit_norm_queries_and_items():
    m = _model()
    b = _batch()
    h = _encode(m, b)
    assert h.shape == (B, L, 32)
    q = m.query(h, torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L, dtype=torch.long))
    assert q.shape == (B, L, 32)
    assert torch.allclose(q.norm(dim=-1), torch.ones(B, L), atol=1e-5)
    E = m.item_embeddings()
    assert E.shape == (V + 1, 32)
    assert torch.allclose(E[1:].norm(dim=-1), torch.ones(V), atol=1e-5)
    assert m.score_all(b).shape == (B, V + 1)


def test_future_inputs_cannot_change_earlier_outputs():
    m = _model()
    b = _batch(lengths=(12, 12, 12))
    h = _encode(m, b)
    for t in (0, 4, 10):
        p = {k: v.clone() for k, v in b.items()}
        g = torch.Generator().manual_seed(t + 1)
        p["items"][:, t + 1 :] = torch.randint(1, V + 1, (B, L - t - 1), generator=g)
        p["outcomes"][:, t + 1 :] = (p["outcomes"][:, t + 1 :] + 1) % len(OUTCOMES)
        p["surfaces"][:, t + 1 :] = (p["surfaces"][:, t + 1 :] + 1) % 3
        p["ts_days"][:, t + 1 :] += 100.0
        p["log_gap"][:, t + 1 :] += 3.0
        hp = _encode(m, p)
        assert torch.allclose(hp[:, : t + 1], h[:, : t + 1], atol=1e-5), f"position <= {t} saw the future"
        assert not torch.allclose(hp[:, t + 1 :], h[:, t + 1 :], atol=1e-3)  # the perturbation is real


def test_padding_on_the_right_does_not_change_real_positions():
    m = _model()
    b = _batch(lengths=(5, 5, 5))
    short = {k: v[:, :5] for k, v in b.items()}
    assert torch.allclose(_encode(m, b)[:, :5], _encode(m, short), atol=1e-5)


def _rows(b: dict, rows: list[int], start: list[int], stop: list[int]) -> dict:
    """Positions start[i]:stop[i] of batch row rows[i], right-padded into a new batch."""
    n = max(max(e - s for s, e in zip(start, stop)), 1)
    out = {k: torch.zeros((len(rows), n), dtype=v.dtype) for k, v in b.items()}
    for i, (r, s, e) in enumerate(zip(rows, start, stop)):
        for k, v in b.items():
            out[k][i, : e - s] = v[r, s:e]
    return out


def test_encoding_appended_positions_with_the_kv_cache_equals_a_full_encode():
    m = _model()
    b = _batch(lengths=(12, 9, 6))
    full, full_cache = m.encode(**b, return_cache=True)
    # each row's history arrives in pieces of different sizes, batched together at every step
    cuts = [[0, 1, 5, 12], [0, 4, 5, 9], [0, 6, 6, 6]]
    cache = None
    for step in range(1, 4):
        start, stop = [c[step - 1] for c in cuts], [c[step] for c in cuts]
        h, cache = m.encode(**_rows(b, [0, 1, 2], start, stop), cache=cache, return_cache=True)
        for r in range(3):
            n = stop[r] - start[r]
            assert torch.allclose(h[r, :n], full[r, start[r] : stop[r]], atol=1e-5)
        assert cache.lengths.tolist() == stop
    for got, want in zip(cache.rows(), full_cache.rows()):  # the same per-layer keys and values
        assert got.lengths.tolist() == want.lengths.tolist()
        for a, w in zip(got.keys + got.values, want.keys + want.values):
            assert a.shape == w.shape and torch.allclose(a, w, atol=1e-5)
    restacked = KVCache.stack(cache.rows())
    assert restacked.lengths.tolist() == [12, 9, 6] and restacked.keys[0].shape[2] == 12
    assert len(cache.keys) == 2 and cache.keys[0].shape[:2] == (3, 2)  # (B, H, P, d/H) per layer


def test_encode_flops_count_the_attention_to_cached_positions():
    cfg = _model().cfg
    whole = encode_flops(cfg, 12)
    assert encode_flops(cfg, 5) + encode_flops(cfg, 7, n_past=5) == pytest.approx(whole)
    assert encode_flops(cfg, 1, n_past=11) < encode_flops(cfg, 12) / 10


def test_generate_queries_returns_one_query_per_budget_entry_with_labels():
    m = _model()
    budget = [("click", "next"), ("save", "next"), ("save", "day"), ("any", "week")]
    out = m.generate_queries(_batch(), budget)
    assert out["queries"].shape == (B, 4, 32)
    assert out["outcomes"] == ["click", "save", "save", "any"]
    assert out["offsets"] == ["next", "next", "day", "week"]
    q = out["queries"]
    assert not torch.allclose(q[:, 0], q[:, 1]) and not torch.allclose(q[:, 1], q[:, 2])
    # the query depends on the last real position only: changing padding changes nothing
    b2 = _batch()
    b2["outcomes"][1, 7:] = 0
    assert torch.allclose(m.generate_queries(b2, budget)["queries"], q, atol=1e-6)


def test_single_token_model_only_answers_next_offset():
    m = _model(multi_token=False)
    assert m.cfg.offsets == ("next",)
    m.generate_queries(_batch(), [("click", "next")])
    with pytest.raises(ValueError, match="offset"):
        m.generate_queries(_batch(), [("click", "day")])


def test_uc_switch_makes_queries_ignore_the_outcome():
    uc = _model(outcome_conditioning=False)
    q = uc.generate_queries(_batch(), [("click", "next"), ("save", "next"), ("any", "next")])["queries"]
    assert torch.allclose(q[:, 0], q[:, 1]) and torch.allclose(q[:, 0], q[:, 2])
    oc = _model()
    q = oc.generate_queries(_batch(), [("click", "next"), ("save", "next")])["queries"]
    assert not torch.allclose(q[:, 0], q[:, 1])


def test_side_inputs_switch_off_makes_model_item_only():
    m = _model(side_inputs=False)
    b = _batch()
    p = {k: v.clone() for k, v in b.items()}
    p["outcomes"] = (p["outcomes"] + 3) % len(OUTCOMES)
    p["ts_days"] += 55.0
    assert torch.allclose(_encode(m, b), _encode(m, p))
    m2 = _model()
    assert not torch.allclose(_encode(m2, b), _encode(m2, p))


def test_hashed_item_tables_embed_every_id_and_keep_padding_zero():
    m = _model(hash_tables=2, hash_buckets=17)
    E = m.item_emb(torch.arange(V + 1))
    assert E.shape == (V + 1, 32)
    assert torch.all(E[0] == 0)
    # one table of 17 rows could give at most 17 distinct vectors; two tables separate most ids
    assert torch.unique(E[1:], dim=0).shape[0] > 2 * 17
    assert sum(p.numel() for p in m.item_emb.parameters()) == 2 * 18 * 32


def test_chunked_logsumexp_matches_dense_value_and_gradients():
    torch.manual_seed(1)
    q = torch.randn(1300, 8, dtype=torch.float64, requires_grad=True)
    E = torch.randn(40, 8, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1300, dtype=torch.float64)
    a = (chunked_logsumexp(q, E, s, torch.float64).double() * w).sum()
    b = (torch.logsumexp(q @ E.T * s, 1) * w).sum()
    assert abs(a.item() - b.item()) < 1e-3
    for ga, gb in zip(torch.autograd.grad(a, (q, E, s)), torch.autograd.grad(b, (q, E, s))):
        assert torch.allclose(ga, gb, atol=1e-3)


def _item_fn(E):
    return lambda ids: E if ids is None else E[ids]


def test_full_softmax_loss_with_one_positive_is_cross_entropy_over_all_items():
    torch.manual_seed(2)
    E = F.normalize(torch.randn(V + 1, 16), dim=-1)
    q = F.normalize(torch.randn(9, 16), dim=-1)
    tgt = torch.randint(1, V + 1, (9,))
    T = torch.tensor(0.1)
    loss = sampled_softmax_loss(
        q, tgt[:, None], torch.ones(9, 1, dtype=torch.bool), _item_fn(E), T, LossConfig(full_softmax=True), V
    )
    logits = q @ E[1:].T / 0.1
    assert torch.allclose(loss, F.cross_entropy(logits, tgt - 1), atol=1e-4)


def test_window_relaxation_counts_any_positive_in_the_window():
    torch.manual_seed(3)
    E = F.normalize(torch.randn(V + 1, 16), dim=-1)
    q = F.normalize(torch.randn(1, 16), dim=-1)
    T = torch.tensor(0.2)
    pos = torch.tensor([[4, 9, 20]])
    p = torch.softmax(q @ E[1:].T / 0.2, dim=-1)[0]
    full = LossConfig(full_softmax=True)
    loss = sampled_softmax_loss(q, pos, torch.tensor([[True, True, True]]), _item_fn(E), T, full, V)
    assert math.isclose(loss.item(), -math.log(p[3] + p[8] + p[19]), rel_tol=1e-4)
    masked = sampled_softmax_loss(q, pos, torch.tensor([[True, False, True]]), _item_fn(E), T, full, V)
    assert math.isclose(masked.item(), -math.log(p[3] + p[19]), rel_tol=1e-4)


def test_sampled_softmax_applies_logq_and_masks_accidental_hits():
    torch.manual_seed(4)
    E = F.normalize(torch.randn(V + 1, 16), dim=-1)
    q = F.normalize(torch.randn(6, 16), dim=-1)
    pos = torch.arange(1, 7)[:, None]
    mask = torch.ones(6, 1, dtype=torch.bool)
    logp = torch.log(torch.full((V + 1,), 1.0 / V))
    T = torch.tensor(0.5)
    cfg = LossConfig(full_softmax=False, n_inbatch=6, n_uniform=0, logq=True)
    got = sampled_softmax_loss(q, pos, mask, _item_fn(E), T, cfg, V, logp, generator=torch.Generator().manual_seed(0))
    # hand computation: the in-batch candidates are the 6 positives (drawn with replacement);
    # each row's own positive is masked out of the negatives; every logit is shifted by the same
    # log Q (uniform popularity), so the loss equals softmax over {own positive} + other positives
    cand = pos[:, 0][torch.randint(0, 6, (6,), generator=torch.Generator().manual_seed(0))]
    s = q @ E.T / 0.5
    logq = math.log(6 / V)
    rows = []
    for n in range(6):
        negs = [s[n, c] - logq for c in cand.tolist() if c != pos[n, 0]]
        allv = torch.stack([s[n, pos[n, 0]] - logq] + negs)
        rows.append(torch.logsumexp(allv, 0) - (s[n, pos[n, 0]] - logq))
    assert torch.allclose(got, torch.stack(rows).mean(), atol=1e-5)
    # logQ lowers the logit of popular candidates: with a skewed popularity the loss changes
    skew = torch.log(torch.linspace(1, 100, V + 1) / torch.linspace(1, 100, V + 1).sum())
    off = LossConfig(full_softmax=False, n_inbatch=6, n_uniform=0, logq=False)
    a = sampled_softmax_loss(q, pos, mask, _item_fn(E), T, cfg, V, skew, generator=torch.Generator().manual_seed(0))
    b = sampled_softmax_loss(q, pos, mask, _item_fn(E), T, off, V, skew, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)


def test_hard_negatives_raise_the_loss_when_they_score_high():
    torch.manual_seed(5)
    E = F.normalize(torch.randn(V + 1, 16), dim=-1)
    q = E[7:8].clone()  # query right on item 7
    T = torch.tensor(0.1)
    pos = torch.tensor([[3]])
    one = torch.ones(1, 1, dtype=torch.bool)
    base = sampled_softmax_loss(q, pos, one, _item_fn(E), T, LossConfig(), V)
    hard = sampled_softmax_loss(
        q, pos, one, _item_fn(E), T, LossConfig(), V, hard_ids=torch.tensor([[7]]), hard_mask=one
    )
    assert hard > base


def test_fast_dropout_drops_the_requested_fraction_and_keeps_the_mean():
    torch.manual_seed(6)
    x = torch.ones(200_000)
    y = fast_dropout(x, 0.25, True)
    assert abs((y == 0).float().mean().item() - 0.25) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(fast_dropout(x, 0.25, False), x)


def test_any_outcome_index_is_outside_the_contract_vocabulary():
    assert ANY_OUTCOME == len(OUTCOMES) and OFFSETS[0] == "next"
