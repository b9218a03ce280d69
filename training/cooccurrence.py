"""What sessions show together: item representations from the whole log, impressions included.

A week of engagements is a few tokens per item, too little to learn what an item is; the log's
impressions are ten times more, and what one session shows together is about one thing (a feed
session's mood, a search query, a related-items board). `CoImpressions` keeps, per session, the
distinct items it showed or engaged (vocabulary indices), and gives two uses of them:

    seed_table(d)          PPMI of item co-occurrence within sessions, factorised (randomised SVD)
                           into d dimensions: the item table's starting rows before pretraining
    pairs(n, rng)          n (anchor, positive) pairs of distinct items shown in one session: the
                           auxiliary contrastive objective of training (`co_impression_loss`)

    co_impression_loss(E_a, E_p, tau) = mean_n [ logsumexp_m <a_n, p_m>/tau - <a_n, p_n>/tau ]

over L2-normalised item vectors with in-batch negatives. Nothing here reads anything but the
log's (session, item) pairs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def session_item_keys(session: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One int64 key per (session, item) row: (keys, the distinct sessions in sorted order,
    width), where ``key // width`` is the row's session's position in that order and
    ``key % width`` its item. Equal rows have equal keys. `item` holds non-negative ints."""
    code, sessions = pd.factorize(np.asarray(session, np.int64), sort=True)
    width = int(np.max(item, initial=0)) + 1
    return code.astype(np.int64) * width + np.asarray(item, np.int64), sessions, width


def distinct_session_items(session: np.ndarray, item: np.ndarray) -> np.ndarray:
    """(P, 2) int64: the distinct (session, item) rows, sorted by session then item, as
    ``np.unique(np.stack([session, item], 1), axis=0)`` gives them, by sorting the distinct keys
    of `session_item_keys` (about 5x faster than a unique of rows on a few days of 10^6-event
    logs). `item` holds non-negative ints."""
    if not len(session):
        return np.zeros((0, 2), np.int64)
    keys, sessions, width = session_item_keys(session, item)
    key = pd.unique(keys)
    key.sort()
    return np.stack([sessions[key // width], key % width], 1).astype(np.int64)


@dataclass
class CoImpressions:
    """Distinct items of each session with at least two (CSR: `items[ptr[s]:ptr[s + 1]]`)."""

    ptr: np.ndarray  # (S + 1,) int64
    items: np.ndarray  # vocabulary indices 1..V, int64
    n_items: int  # V

    @classmethod
    def from_events(cls, events: pd.DataFrame, vocab: np.ndarray) -> CoImpressions:
        """Sessions of a contract frame, items mapped through `vocab` ((V+1,), [0] = -1, sorted;
        unknown items dropped). Every row counts: impressions, engagements, negatives."""
        n_items = len(vocab) - 1
        raw = events["item_id"].to_numpy(np.int64)
        idx = np.minimum(np.searchsorted(vocab[1:], raw) + 1, max(n_items, 1))
        known = (vocab[idx] == raw) if n_items else np.zeros(len(raw), bool)
        session = events["session_id"].to_numpy(np.int64)[known]
        key = distinct_session_items(session, idx[known])
        sessions, starts, counts = np.unique(key[:, 0], return_index=True, return_counts=True)
        keep = np.repeat(counts >= 2, counts)
        counts = counts[counts >= 2]
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), key[keep, 1].astype(np.int64), n_items)

    @property
    def n_sessions(self) -> int:
        return len(self.ptr) - 1

    def __len__(self) -> int:
        return len(self.items)

    def pairs(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n (anchor, positive) index pairs: an anchor drawn over every (session, item) entry,
        its positive another item of the same session, drawn uniformly."""
        if not len(self.items):
            raise ValueError("no session shows two known items: no co-impression pairs to draw")
        a = rng.integers(0, len(self.items), n)
        session = np.searchsorted(self.ptr, a, side="right") - 1
        start, size = self.ptr[session], self.ptr[session + 1] - self.ptr[session]
        other = (a - start + 1 + (rng.random(n) * (size - 1)).astype(np.int64)) % size  # never a itself
        return self.items[a], self.items[start + other]

    def cooccurrence(self) -> torch.Tensor:
        """(V+1, V+1) sparse counts of sessions showing both items (diagonal dropped)."""
        rows = np.repeat(np.arange(self.n_sessions), np.diff(self.ptr))
        with warnings.catch_warnings():  # torch's notes on sparse tensors (beta, invariant checks)
            warnings.simplefilter("ignore", UserWarning)
            X = torch.sparse_coo_tensor(
                torch.from_numpy(np.stack([rows, self.items])),
                torch.ones(len(self.items)),
                (self.n_sessions, self.n_items + 1),
            ).coalesce()
            C = torch.sparse.mm(X.t().coalesce(), X).coalesce()
        i, v = C.indices(), C.values()
        off = i[0] != i[1]
        return torch.sparse_coo_tensor(i[:, off], v[off], C.shape).coalesce()

    def seed_table(self, d: int, seed: int = 0, norm: float = 1.0) -> torch.Tensor:
        """(V+1, d) item vectors from the PPMI of co-occurrence, factorised by randomised SVD
        (U sqrt(S)); each row scaled to `norm`, rows of items seen in no session and row 0 = 0."""
        C = self.cooccurrence()
        i, v = C.indices(), C.values()
        row = torch.zeros(self.n_items + 1).index_add_(0, i[0], v)
        total = v.sum().clamp_min(1.0)
        pmi = torch.log(v * total / (row[i[0]] * row[i[1]]).clamp_min(1e-12))
        keep = pmi > 0
        M = torch.sparse_coo_tensor(i[:, keep], pmi[keep], C.shape).coalesce()
        torch.manual_seed(seed)
        q = min(d, self.n_items)
        U, S, _ = torch.svd_lowrank(M, q=q, niter=4)
        E = U * S.sqrt()
        E = torch.cat([E, torch.zeros(E.shape[0], d - q)], 1) if q < d else E
        E = F.normalize(E, dim=1) * norm
        E[row == 0] = 0.0
        return E


def co_impression_loss(item_embeddings, anchors: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE of (n,) anchor and positive item indices: `item_embeddings(ids)` -> normalised
    vectors, in-batch negatives; another row's positive that equals the row's own is no negative."""
    a, p = item_embeddings(anchors).float(), item_embeddings(positives).float()
    logits = a @ p.T / tau
    same = (positives[None, :] == positives[:, None]) & ~torch.eye(len(positives), dtype=torch.bool)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def seed_item_table(model, co: CoImpressions, seed: int = 0, norm: float = 0.0) -> None:
    """Overwrite `model`'s item table (one ID row per item) with `co.seed_table`, rows scaled to
    `norm` (0: the norm the table's rows have on average); items no session showed keep their rows."""
    table = model.item_emb.table.weight if model.cfg.hash_tables == 0 else None
    if table is None:
        raise ValueError("seeding the item table needs one ID row per item (hash_tables = 0)")
    with torch.no_grad():
        norm = norm or float(table[1:].norm(dim=1).mean())
        E = co.seed_table(table.shape[1], seed, norm)
        shown = E.norm(dim=1) > 0
        table[shown] = E[shown].to(table.dtype)


def sample_pairs(co: CoImpressions, n: int, seed: int, epoch: int, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`co.pairs` as tensors, drawn from a generator keyed by (seed, epoch, batch): a resumed run
    draws the same pairs as a straight one."""
    a, p = co.pairs(n, np.random.default_rng([seed, epoch, 2, batch_idx]))
    return torch.from_numpy(a), torch.from_numpy(p)


__all__ = ["CoImpressions", "co_impression_loss", "sample_pairs", "seed_item_table"]
