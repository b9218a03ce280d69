"""Sampled softmax with window relaxation, logQ correction and hard negatives.

For N query rows q (L2-normalised) with a positive set P_n (the engaged items inside the target
window that match the conditioned outcome; slot 0 is the sampled target itself):

    loss_n = logsumexp_{c in P_n + negatives} s_c  -  logsumexp_{p in P_n} s_p,
    s_c = <q_n, e_c> / T  (- log Q(c) for sampled candidates when logQ is on).

Negatives are either all items ("full softmax", `num_negatives=None`), or one shared set per
batch: `n_inbatch` positives of other rows plus `n_uniform` uniform draws. Candidates equal to one
of the row's positives are masked (no accidental hits). Hard negatives (impressed, not engaged)
are added per row when given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


@dataclass
class LossConfig:
    full_softmax: bool = True     # all items as negatives (best for small catalogues)
    n_inbatch: int = 512          # sampled mode: positives of other rows used as negatives
    n_uniform: int = 512          # sampled mode: uniform random items
    logq: bool = True             # subtract log(sampling probability) from sampled logits


def sampled_softmax_loss(q: torch.Tensor, pos_ids: torch.Tensor, pos_mask: torch.Tensor,
                         item_embeddings, temperature: torch.Tensor, cfg: LossConfig,
                         n_items: int, item_log_prob: torch.Tensor | None = None,
                         hard_ids: torch.Tensor | None = None, hard_mask: torch.Tensor | None = None,
                         generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    """Mean loss over N rows (`reduction="none"`: the (N,) per-row losses).

    q (N, d) normalised queries; pos_ids (N, K) item indices with pos_mask (N, K) (slot 0 True);
    item_embeddings(ids | None) -> normalised vectors ((V+1, d) when None);
    item_log_prob (V+1,) log popularity of each item (for logQ of in-batch negatives);
    hard_ids / hard_mask (N, H) hard negatives.
    """
    pos_vec = item_embeddings(pos_ids)                                           # (N, K, d)
    pos_logit = torch.einsum("nd,nkd->nk", q, pos_vec.to(q.dtype)) / temperature  # (N, K)
    if cfg.full_softmax:
        E = item_embeddings(None).to(q.dtype)                                    # (V+1, d)
        logits = (q @ E.T) / temperature                                         # (N, V+1)
        logits[:, 0] = NEG_INF                                                   # padding row
        parts = [logits]
        if hard_ids is not None:
            # hard negatives are already in the full set; counting them once more up-weights them
            hard = torch.einsum("nd,nhd->nh", q, item_embeddings(hard_ids).to(q.dtype)) / temperature
            parts.append(hard.masked_fill(~hard_mask, NEG_INF))
        denom = torch.logsumexp(torch.cat(parts, dim=1).float(), dim=1)
    else:
        # one shared candidate set per batch: in-batch positives + uniform draws
        flat = pos_ids[:, 0]
        idx = torch.randint(0, flat.shape[0], (min(cfg.n_inbatch, flat.shape[0]),), generator=generator,
                            device=flat.device)
        inb = flat[idx]
        uni = torch.randint(1, n_items + 1, (cfg.n_uniform,), generator=generator, device=flat.device)
        cand = torch.cat([inb, uni])                                             # (C,)
        neg_logit = (q @ item_embeddings(cand).to(q.dtype).T) / temperature      # (N, C)
        if cfg.logq:
            # expected count of c in the candidate set: n_inbatch * p_pop(c) + n_uniform / V
            p = item_log_prob.exp()[cand] * inb.shape[0] + cfg.n_uniform / n_items
            logq_c = p.log()
            neg_logit = neg_logit - logq_c
            pp = item_log_prob.exp()[pos_ids] * inb.shape[0] + cfg.n_uniform / n_items
            pos_logit = pos_logit - pp.log()
        hit = (cand.view(1, 1, -1) == pos_ids.unsqueeze(-1)).any(1)              # (N, C)
        parts = [pos_logit.masked_fill(~pos_mask, NEG_INF), neg_logit.masked_fill(hit, NEG_INF)]
        if hard_ids is not None:
            hard = torch.einsum("nd,nhd->nh", q, item_embeddings(hard_ids).to(q.dtype)) / temperature
            parts.append(hard.masked_fill(~hard_mask, NEG_INF))
        denom = torch.logsumexp(torch.cat(parts, dim=1).float(), dim=1)
    numer = torch.logsumexp(pos_logit.float().masked_fill(~pos_mask, NEG_INF), dim=1)
    losses = denom - numer
    return losses.mean() if reduction == "mean" else losses


def full_softmax_reference(q: torch.Tensor, target: torch.Tensor, E: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """Plain cross-entropy over all items (for tests): q (N, d), target (N,), E (V+1, d)."""
    logits = q @ E.T / temperature
    logits[:, 0] = NEG_INF
    return F.cross_entropy(logits, target)
