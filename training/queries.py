"""Search queries: the head's query table (`PinRec.search_emb`), learned from the log.

A search session follows a query; what its user engages with depends on it at least as much as
on their history. The log's contract carries it (`query_id` on search events), so the model
learns one vector per query the training log has: a target's query is added to the hidden state
the head reads (`PinRec.query(..., search=...)`), and a search request's query does the same at
serving. The table starts where the items shown under each query sit in the item table (their
mean, when the item table was seeded from co-impressions) and is trained with the rest; a query
the model never saw (or a request without one) reads row 0, which is zero: no shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch


def build_query_vocab(events: pd.DataFrame) -> np.ndarray:
    """(Q+1,) sorted raw query ids of the frame's rows with one; [0] = -1 (no query)."""
    if "query_id" not in events.columns:
        return np.array([-1], np.int64)
    q = events["query_id"].dropna().to_numpy(np.int64)
    return np.concatenate([[-1], np.unique(q)]).astype(np.int64)


def query_rows(raw: np.ndarray, query_vocab: np.ndarray) -> np.ndarray:
    """Rows of `query_vocab` for raw query ids (negative, unknown: 0)."""
    known = query_vocab[1:]
    if not len(known):
        return np.zeros(len(raw), np.int64)
    raw = np.asarray(raw, np.int64)
    pos = np.minimum(np.searchsorted(known, raw), len(known) - 1)
    return np.where((raw >= 0) & (known[pos] == raw), pos + 1, 0).astype(np.int64)


def frame_query_rows(events: pd.DataFrame, query_vocab: np.ndarray) -> np.ndarray:
    """(len(events),) the query row of every event (0: none)."""
    if "query_id" not in events.columns:
        return np.zeros(len(events), np.int64)
    raw = events["query_id"].astype("Int64").fillna(-1).to_numpy(np.int64)
    return query_rows(raw, query_vocab)


def search_rows(model, raw: Sequence[int | None]) -> torch.Tensor:
    """(n,) rows of `model`'s search table for raw query ids (None, unknown, no table: 0)."""
    if model.search_emb is None:
        return torch.zeros(len(raw), dtype=torch.long)
    ids = np.array([-1 if q is None else int(q) for q in raw], np.int64)
    return torch.from_numpy(query_rows(ids, model.query_ids.cpu().numpy()))


def seed_search_table(model, events: pd.DataFrame, vocab: np.ndarray, query_vocab: np.ndarray) -> None:
    """Start each query's row at the mean of the (seeded) item vectors shown under it, scaled to
    the hidden state's norm (LayerNorm output: sqrt(d)); row 0 stays zero."""
    if model.search_emb is None:
        return
    raw = events["item_id"].to_numpy(np.int64)
    idx = np.minimum(np.searchsorted(vocab[1:], raw) + 1, max(len(vocab) - 1, 1))
    rows = frame_query_rows(events, query_vocab)
    keep = (vocab[idx] == raw) & (rows > 0)
    if not keep.any():
        return
    with torch.no_grad():
        E = torch.nn.functional.normalize(model.item_emb(torch.arange(len(vocab))), dim=-1)
        Q = torch.zeros(len(query_vocab), E.shape[1])
        Q.index_add_(0, torch.from_numpy(rows[keep]), E[torch.from_numpy(idx[keep])])
        Q = torch.nn.functional.normalize(Q, dim=-1) * E.shape[1] ** 0.5
        Q[0] = 0.0
        model.search_emb.weight.copy_(Q)


__all__ = ["build_query_vocab", "frame_query_rows", "query_rows", "search_rows", "seed_search_table"]
