"""Does a model ask different things for saves and for clicks? The save and click queries of each
model row of `policy_loop`, read against the world's true engagement probabilities (a benchmark's
reference reading, as the oracle row is: no model or policy reads them).

For `n_users` users drawn once (seeded), as they are at the end of the training days, on one
surface (homefeed) and the first served day, each model row's version retrieves a top-k list with
outcome weights {"save": 1} (the save query) and {"click": 1} (the click query), seen items dropped
as when serving. Columns (per model row):

  query_jaccard_save_click   mean Jaccard overlap of the two lists (1: the same list)
  true_saves_save_query      mean true P(save) of the save query's list, per 1,000 impressions
  true_saves_click_query     ... of the click query's list
  true_clicks_save_query     mean true P(click) of the save query's list, per 1,000
  true_clicks_click_query    ... of the click query's list

The references have the same columns: `random` (every item's mean: what a random list gets; no
overlap column) and `oracle` (its "save query" the top k by true P(save), its "click query" the
top k by true P(click): the best lists, and how different they are). These are open-loop
probabilities (no position bias, no fatigue): what the world's `expected_engagement` says of an
impression.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serving.service.retriever import RetrievalRequest
from world.policy_loop.harness import LogRun
from world.policy_loop.policies import ModelPolicy

OUTCOMES = ("save", "click")


def _jaccard(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([len(set(x) & set(y)) / max(len(set(x) | set(y)), 1) for x, y in zip(a, b)]))


def _columns(lists: Mapping[str, list[np.ndarray]], truth: Mapping[str, np.ndarray]) -> dict[str, float]:
    row = {"query_jaccard_save_click": round(_jaccard(lists["save"], lists["click"]), 3)}
    for t in OUTCOMES:
        for o in OUTCOMES:
            rates = [truth[t][i, items].mean() for i, items in enumerate(lists[o]) if len(items)]
            row[f"true_{t}s_{o}_query"] = round(1000.0 * float(np.mean(rates)), 2)
    return row


def outcome_query_columns(
    policies: Mapping[str, object], run: LogRun, n_users: int = 400, k: int = 50, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{row: columns} for the model rows among `policies` and the `random` and `oracle` references."""
    surface = "homefeed"
    known = np.array(sorted(run.sequences.by_user), np.int64)
    users = np.random.default_rng(seed).choice(known, min(n_users, len(known)), replace=False)
    truth = run.world.world.expected_engagement(users, surface, run.serve_days[0])
    sequences = [run.sequences.get(int(u)) for u in users]
    out: dict[str, dict[str, float]] = {}
    by_version: dict[int, dict[str, float]] = {}  # rows that share a model (pinrec, unipinrec, ...) read it once
    for name, policy in policies.items():
        if not isinstance(policy, ModelPolicy):
            continue
        version = policy.versions[surface]
        if id(version) not in by_version:
            lists = {}
            for o in OUTCOMES:
                results = version.retrieve_batch([RetrievalRequest(s, k, {o: 1.0}) for s in sequences])
                lists[o] = [np.array([c.item for c in r.candidates], np.int64) for r in results]
            by_version[id(version)] = _columns(lists, truth)
        out[name] = dict(by_version[id(version)])
    n_items = truth["save"].shape[1]
    every = [np.arange(n_items)] * len(users)
    out["random"] = _columns({o: every for o in OUTCOMES}, truth)
    del out["random"]["query_jaccard_save_click"]  # no lists to compare
    best = {o: [np.argsort(-truth[o][i], kind="stable")[:k] for i in range(len(users))] for o in OUTCOMES}
    out["oracle"] = _columns(best, truth)
    return out
