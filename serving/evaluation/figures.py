"""The canary evaluation's figures for a day, per role: what `canary_evaluation` records and the
offline gate (`serving.evaluation.gate`) judges, and what `benchmarks/canary_calibration.py`
measures the gate's error rates on.

- each loaded version (`candidate`, `champion`): `serving.evaluation.canary.evaluate_version`
  (recall per outcome, diversity, ranking of the day's slates) and latency measured in one
  process on repeated, interleaved requests (`interleaved_retrievals`);
- the baselines: popularity, and "buy again" where the vocabulary allows repeats
  (`serving.evaluation.buy_again`);
- the yardstick of every role (`yardstick_figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from serving.service.encoder import UserSequence
from serving.service.retriever import LoadedVersion


@dataclass(frozen=True)
class DayFigures:
    """{role: {figure: value}} of the versions, of the baselines, and the yardstick's name."""

    versions: dict[str, dict[str, float]]
    baselines: dict[str, dict[str, float]]
    yardstick: str


def yardstick_figures(
    loaded: Mapping[str, LoadedVersion], events, serving_log, sequences, train, vocab, k: int
) -> tuple[str, dict[str, dict[str, float]]]:
    """(the yardstick's name, {role: {name, name_se, name_users}}) for the loaded versions and the
    baselines, on the day's logged impressions (serving.evaluation.yardstick: the engagement rate
    of the impressions whose item is in each policy's own top 100 (`YARDSTICK_K`) for the user, as it
    serves it; from logs only), and the random policy's where the serving log has an exploration
    share; beside it, reported only, the position-corrected replay (`RANKING_YARDSTICK`). A log
    without impressions has no yardstick: the gate then judges on recall@`k`
    (returned with no extra figures; the evaluation measures it for every role)."""
    from serving.evaluation import replay
    from serving.evaluation import yardstick as ys
    from serving.evaluation.buy_again import baseline_listers

    if vocab.impression is None or not (events["outcome"] == vocab.impression).any():
        return f"recall@{k}", {}
    positive = [o for o in vocab.engaged if o in ys.POSITIVE] or list(vocab.engaged)
    impressions = ys.logged_impressions(events, serving_log, vocab.impression, positive)
    listers = {role: replay.version_lister(version, sequences) for role, version in loaded.items()}
    # popularity, and buy again where the vocabulary allows repeats
    listers.update(baseline_listers(train, sequences, positive, repeats=vocab.repeats))
    if "propensity" in serving_log and (serving_log["propensity"] < 1.0).any() and loaded:
        # the log has an exploration share: random is a baseline (over the versions' catalogue)
        catalogue = next(iter(loaded.values())).item_ids
        listers["random"] = replay.random_lister(catalogue, sequences, repeats=vocab.repeats)
    figures = {}
    for role, lister in listers.items():
        lists = replay.policy_lists(lister, impressions, ys.YARDSTICK_K)
        measured = replay.replay_measures(lists, impressions, (ys.YARDSTICK_K,))
        figures[role] = {}
        # the gate's figure, and the position-corrected one that ranks policies over many days
        # (reported, not gated: on one day its standard error exceeds a model's gap to the baselines)
        for name in (ys.YARDSTICK, ys.RANKING_YARDSTICK):
            figures[role].update(
                {
                    name: float(measured[name]["value"]),
                    f"{name}_se": float(measured[name]["se"]),
                    f"{name}_users": float(measured[name]["n"]),
                }
            )
    return ys.YARDSTICK, figures


def day_figures(
    loaded: Mapping[str, LoadedVersion],
    sequences: Mapping[int, UserSequence],
    events: pd.DataFrame,
    serving_log: pd.DataFrame,
    train: pd.DataFrame,
    vocab,
    users: Sequence[int],
    *,
    k: int = 100,
    outcomes: Sequence[str] = ("click", "save"),
    latency_rounds: int = 3,
) -> DayFigures:
    """Every role's figures on the day's `events` (one surface, the evaluation's users) with
    `serving_log` (the same surface's) and `train` (the days the candidate trained on, for the
    baselines). See the module docstring."""
    from serving.evaluation.buy_again import baseline_figures
    from serving.evaluation.canary import evaluate_version, interleaved_retrievals

    # latency compared in one process, on repeated interleaved requests; their lists serve the
    # figures below, so each user's list is retrieved once per role
    latency, lists = interleaved_retrievals(loaded, sequences, users, k=k, rounds=latency_rounds)
    results = {
        role: evaluate_version(
            version,
            sequences,
            events,
            k=k,
            outcomes=outcomes,
            engaged=vocab.engaged,
            impression=vocab.impression,
            retrieved_before=lists[role],
        )
        for role, version in loaded.items()
    }
    for role, figures in latency.items():
        results[role].update(figures)
    baselines = baseline_figures(
        train, sequences, events, repeats=vocab.repeats, k=k, outcomes=outcomes, engaged=vocab.engaged
    )
    yardstick, figures = yardstick_figures(loaded, events, serving_log, sequences, train, vocab, k)
    for role, values in figures.items():
        (results if role in results else baselines).setdefault(role, {}).update(values)
    return DayFigures(results, baselines, yardstick)
