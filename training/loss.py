"""Sampled softmax with window relaxation, logQ correction and hard negatives.

For N query rows q (L2-normalised) with a positive set P_n (the engaged items inside the target
window that match the conditioned outcome; slot 0 is the sampled target itself):

    loss_n = logsumexp_{c in P_n + negatives} s_c  -  logsumexp_{p in P_n} s_p,
    s_c = <q_n, e_c> / T  (- log Q(c) for sampled candidates when logQ is on).

Negatives are either all items ("full softmax", `full_softmax=True`: the sampled softmax whose
negatives are the whole catalogue), or one shared set per batch: `n_inbatch` positives of other
rows plus `n_uniform` uniform draws. Sampled candidates equal to one of the row's positives are
masked (no accidental hits). Hard negatives (impressed, not engaged) are added per row.

The full-softmax denominator is computed by `chunked_logsumexp`, which never materialises the
(N, V) logits: it works through row chunks and recomputes each chunk in the backward pass
(like a fused linear-cross-entropy kernel). On a CPU this keeps the work in cache and is several
times faster than `torch.logsumexp(q @ E.T)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")
CHUNK_ROWS = 512


@dataclass
class LossConfig:
    full_softmax: bool = True  # all items as negatives (best for small catalogues)
    n_inbatch: int = 512  # sampled mode: positives of other rows used as negatives
    n_uniform: int = 512  # sampled mode: uniform random items
    logq: bool = True  # subtract log(sampling probability) from sampled logits


class _ChunkedLSE(torch.autograd.Function):
    """lse_n = log sum_v exp(<qs_n, E_v>), computed in row chunks and recomputed in backward.

    The (n, V) chunk is touched by: the matmul, one conversion, one subtraction, one exp and one
    conversion for the two gradient matmuls; every other scaling is done on (n, d) operands.
    """

    @staticmethod
    def forward(ctx, qs: torch.Tensor, E: torch.Tensor, mm_dtype: torch.dtype):
        Em = E.to(mm_dtype)
        out = torch.empty(qs.shape[0], dtype=torch.float32, device=qs.device)
        for a in range(0, qs.shape[0], CHUNK_ROWS):
            out[a : a + CHUNK_ROWS] = torch.logsumexp((qs[a : a + CHUNK_ROWS].to(mm_dtype) @ Em.T).float(), dim=1)
        ctx.save_for_backward(qs, E, out)
        ctx.mm_dtype = mm_dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qs, E, lse = ctx.saved_tensors
        mt = ctx.mm_dtype
        Em = E.to(mt)
        g = grad_out.float()
        gq = torch.empty(qs.shape, dtype=torch.float32, device=qs.device)
        gE = torch.zeros(E.shape, dtype=torch.float32, device=qs.device)
        for a in range(0, qs.shape[0], CHUNK_ROWS):
            qc = qs[a : a + CHUNK_ROWS]
            p = (qc.to(mt) @ Em.T).float()  # (n, V) logits
            p.sub_(lse[a : a + CHUNK_ROWS, None]).exp_()  # softmax
            pm = p.to(mt)
            gc = g[a : a + CHUNK_ROWS, None]
            gq[a : a + CHUNK_ROWS] = (pm @ Em).float() * gc  # dL/dq = g p E
            gE += (pm.T @ (qc * gc).to(mt)).float()  # dL/dE = p^T (g q)
        return gq.to(qs.dtype), gE.to(E.dtype), None


def chunked_logsumexp(
    q: torch.Tensor, E: torch.Tensor, scale: torch.Tensor, mm_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """(N,) log sum_v exp(scale * q_n . E_v), differentiable in q, E and scale.

    `mm_dtype` defaults to bfloat16 under CPU autocast, else q's dtype.
    """
    if mm_dtype is None:
        mm_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    with torch.autocast("cpu", enabled=False):
        return _ChunkedLSE.apply(q.float() * scale.float(), E.float(), mm_dtype)


def sampled_softmax_loss(
    q: torch.Tensor,
    pos_ids: torch.Tensor,
    pos_mask: torch.Tensor,
    item_embeddings,
    temperature: torch.Tensor,
    cfg: LossConfig,
    n_items: int,
    item_log_prob: torch.Tensor | None = None,
    hard_ids: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    item_bias=None,
) -> torch.Tensor:
    """Loss over N rows: mean, or (N,) per row with `reduction="none"`.

    q (N, d) normalised queries; pos_ids (N, K) item indices with pos_mask (N, K) (slot 0 True);
    item_embeddings(ids | None) -> normalised vectors ((V+1, d) with row 0 = padding when None);
    item_log_prob (V+1,) log popularity of each item (logQ of in-batch negatives);
    hard_ids / hard_mask (N, H) hard negatives; item_bias(ids) -> a logit added to every
    item's score (the model's exposure term), or None.
    """
    q = q.float()
    inv_t = 1.0 / temperature.float()

    def bias(ids: torch.Tensor) -> torch.Tensor | float:
        return item_bias(ids).float() if item_bias is not None else 0.0

    pos_logit = torch.einsum("nd,nkd->nk", q, item_embeddings(pos_ids).float()) * inv_t + bias(pos_ids)  # (N, K)
    parts: list[torch.Tensor] = []
    if cfg.full_softmax:
        E, qe = item_embeddings(None)[1:], q  # (V, d), no padding row
        if item_bias is not None:  # <[q, T], [e_v, b_v]> / T = <q, e_v> / T + b_v
            E = torch.cat([E.float(), item_bias(torch.arange(1, E.shape[0] + 1, device=E.device)).float()[:, None]], 1)
            qe = torch.cat([q, temperature.float().expand(q.shape[0], 1)], 1)
        parts.append(chunked_logsumexp(qe, E, inv_t).unsqueeze(1))  # (N, 1)
    else:
        # one shared candidate set per batch: in-batch positives + uniform draws
        flat = pos_ids[:, 0]
        idx = torch.randint(0, flat.shape[0], (min(cfg.n_inbatch, flat.shape[0]),), generator=generator)
        inb = flat[idx]
        uni = torch.randint(1, n_items + 1, (cfg.n_uniform,), generator=generator)
        cand = torch.cat([inb, uni])  # (C,)
        neg_logit = (q @ item_embeddings(cand).float().T) * inv_t + bias(cand)  # (N, C)
        if cfg.logq:
            # expected count of c in the candidate set: n_inbatch * p_pop(c) + n_uniform / V
            pop = item_log_prob.exp()
            neg_logit = neg_logit - (pop[cand] * inb.shape[0] + cfg.n_uniform / n_items).log()
            pos_logit = pos_logit - (pop[pos_ids] * inb.shape[0] + cfg.n_uniform / n_items).log()
        hit = (cand.view(1, 1, -1) == pos_ids.unsqueeze(-1)).any(1)  # (N, C)
        parts += [pos_logit.masked_fill(~pos_mask, NEG_INF), neg_logit.masked_fill(hit, NEG_INF)]
    if hard_ids is not None:
        # in full mode the hard negatives are already in the denominator; adding them once more
        # up-weights them (the fine-tuning signal)
        hard = torch.einsum("nd,nhd->nh", q, item_embeddings(hard_ids).float()) * inv_t + bias(hard_ids)
        parts.append(hard.masked_fill(~hard_mask, NEG_INF))
    denom = torch.logsumexp(torch.cat(parts, dim=1), dim=1)
    numer = torch.logsumexp(pos_logit.masked_fill(~pos_mask, NEG_INF), dim=1)
    losses = denom - numer
    return losses.mean() if reduction == "mean" else losses
