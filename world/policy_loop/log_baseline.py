"""`log-baseline`: a strong non-neural policy from the log alone.

1. Item clusters from co-impressions: items shown in the same session (organic feeds, search
   results and related items follow what the session is about) co-occur; the co-impression
   counts, normalised ``C_ij / sqrt(d_i d_j)``, are embedded by a few rounds of randomized
   subspace iteration and the embeddings clustered by k-means (numpy only).
2. Per user and cluster, the engagement rate per impression, shrunk to the cluster's rate over
   all users: ``(engaged_uc + a * rate_c) / (shown_uc + a)`` (engaged: click or save).
3. Per item, its engagement rate per impression shrunk to its cluster's: the item's quality.
4. Score(u, i) = user-cluster rate x item quality / cluster rate; a list is the best items the
   user has not acted on. Refit every served day on the policy's own last `days` days of log.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from world.policy_loop.policies import ENGAGED, LoopView, Policy, stable_seed


def co_impression_clusters(
    events: pd.DataFrame, n_items: int, n_clusters: int = 40, dim: int = 24, seed: int = 0
) -> np.ndarray:
    """A cluster id per item (0..n_clusters-1) from within-session co-impressions (docstring)."""
    imp = events[events["outcome"] == "impression"]
    sess = imp["session_id"].to_numpy(np.int64)
    item = imp["item_id"].to_numpy(np.int64)
    order = np.lexsort((item, sess))
    sess, item = sess[order], item[order]
    keep = np.r_[True, (sess[1:] != sess[:-1]) | (item[1:] != item[:-1])]  # an item once per session
    sess, item = sess[keep], item[keep]
    bounds = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1], True])
    start, length = bounds[:-1], np.diff(bounds)
    per = np.repeat(length, length)  # each element's session length
    left = np.repeat(np.arange(item.shape[0]), per)
    first = np.repeat(np.repeat(start, length), per)
    offset = np.arange(left.shape[0]) - np.repeat(np.cumsum(per) - per, per)
    right = first + offset
    co = np.bincount(item[left] * n_items + item[right], minlength=n_items * n_items).astype(np.float32)
    co = co.reshape(n_items, n_items)
    np.fill_diagonal(co, 0.0)
    deg = co.sum(1) + 1.0
    a = co / np.sqrt(deg)[:, None] / np.sqrt(deg)[None, :]
    rng = np.random.default_rng(stable_seed("log-baseline", seed))
    q = rng.standard_normal((n_items, dim)).astype(np.float32)
    for _ in range(6):
        q, _ = np.linalg.qr(a @ q)
    emb = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-9)
    centers = emb[rng.choice(n_items, n_clusters, replace=False)]
    label = np.zeros(n_items, dtype=np.int64)
    for _ in range(25):
        label = np.argmax(emb @ centers.T, axis=1)
        for c in range(n_clusters):
            mine = emb[label == c]
            if len(mine):
                m = mine.mean(0)
                centers[c] = m / max(np.linalg.norm(m), 1e-9)
    return label


class LogBaselinePolicy(Policy):
    """Co-impression clusters and per-user cluster engagement rates (module docstring)."""

    name = "log-baseline"

    def __init__(self, days: int = 7, n_clusters: int = 40, prior: float = 20.0, seed: int = 0) -> None:
        self.days, self.n_clusters, self.prior, self.seed = days, n_clusters, prior, seed
        self.cluster = np.zeros(0, np.int64)
        self.user_rate = np.zeros((0, 0))
        self.item_lift = np.zeros(0)

    def start_day(self, view: LoopView) -> None:
        log = pd.concat(view.events[-self.days :], ignore_index=True)
        n_items, n_users, k = view.n_items, view.world.world.config.n_users, self.n_clusters
        self.cluster = co_impression_clusters(log, n_items, k, seed=self.seed)
        user = log["user_id"].to_numpy(np.int64)
        item = log["item_id"].to_numpy(np.int64)
        shown = (log["outcome"] == "impression").to_numpy()
        engaged = log["outcome"].isin(ENGAGED).to_numpy()
        c = self.cluster[item]
        shown_uc = np.bincount(user[shown] * k + c[shown], minlength=n_users * k).reshape(n_users, k)
        eng_uc = np.bincount(user[engaged] * k + c[engaged], minlength=n_users * k).reshape(n_users, k)
        rate_c = (eng_uc.sum(0) + 1.0) / (shown_uc.sum(0) + 30.0)
        self.user_rate = (eng_uc + self.prior * rate_c) / (shown_uc + self.prior)
        shown_i = np.bincount(item[shown], minlength=n_items)
        eng_i = np.bincount(item[engaged], minlength=n_items)
        item_rate = (eng_i + self.prior * rate_c[self.cluster]) / (shown_i + self.prior)
        self.item_lift = item_rate / rate_c[self.cluster]

    def score(self, users, items, surface, view, sequences=None):
        out = []
        for u, its in zip(users, items):
            its = np.asarray(its, np.int64)
            out.append(self.user_rate[int(u), self.cluster[its]] * self.item_lift[its])
        return out
