"""Benchmark `policy_loop`: every policy serves every user of the same closed-loop days, and how
well each offline measure computed from logs predicts what users did with what was served.

The paired harness (`world.policy_loop`): a logging policy (popularity with a 5% exploration
share) plays days 1-7 (the training log) and days 8-17 (the held-out log of the offline
measures); every policy then serves days 8-17 to all 2,000 users with the same sessions and
random numbers, models trained with the lifecycle's `TrainingPlan` on days 1-7 and served
through `LoadedVersion` (cached under var/bench/policy_loop/models by a hash of recipe and log).

Policy rows: `saves_per_1k`, `clicks_per_1k`, `hides_per_1k` (per 1,000 served slots), `coverage`,
`ci95_saves_per_1k` (95% bootstrap half-width over users), `paired_saves_vs_<ref>` with `_lo` /
`_hi` (95% paired bootstrap interval over users; the same for clicks), `yardstick` (the
offline yardstick that ranks policies over the held-out days,
`serving.evaluation.yardstick.RANKING_YARDSTICK`; the canary gate's per-day figure,
`YARDSTICK`, is the candidate `replay@100`) and `offline_<measure>` for every candidate. Row
`yardstick`: Spearman correlations over the policy rows of the yardstick with served saves and
clicks, and one pair of columns per candidate; `resolved_pairs_saves` (clicks):
the pairs of policies whose paired interval excludes 0, and `agreement_saves_<measure>` (clicks):
the share of those pairs each measure orders as users did. Row `harness`: wall seconds.
Model rows (and `random`, `oracle` as references) also get `query_jaccard_save_click` and
`true_<saves|clicks>_<save|click>_query`: how different the save and click queries' lists are,
and what the world's true probabilities say of each (`benchmarks/policy_loop_queries.py`).

    PYTHONPATH=. .venv/bin/python -m benchmarks.policy_loop                 # full (writes results)
    PYTHONPATH=. .venv/bin/python -m benchmarks.policy_loop --quick --no-write   # smoke, < 2 min

Targets: yardstick spearman_saves and spearman_clicks >= 0.8 over >= 10 policies; the full run
(models cached or not) within 1,200 s.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.policy_loop_queries import outcome_query_columns
from benchmarks.results import argument_parser, print_table, write_results
from serving.evaluation.yardstick import RANKING_YARDSTICK as YARDSTICK
from training.plan import TrainingPlan
from world.policy_loop.harness import HarnessConfig, compare, log_run, offline_measures, pair_agreement, serve
from world.policy_loop.log_baseline import LogBaselinePolicy
from world.policy_loop.models import ABLATION_ROWS, MODEL_ROWS, model_policies
from world.policy_loop.policies import OraclePolicy, PopularityPolicy, RandomPolicy

NAME = "policy_loop"
CACHE = Path("var/bench") / NAME / "models"
ROWS = ("random", "popularity", *MODEL_ROWS, "log-baseline", "oracle")
CANDIDATES = (
    "replay@50",
    "replay@100",
    "replay@200",
    "replay_pooled@100",
    "replay_first@100",
    "replay_lift@100",
    "replay_ips@100",
    "replay_position@50",
    "replay_position@100",
    "replay_position@200",
    "user_auc",
    "session_auc",
    "top_auc",
    "explore_auc",
    "recall50",
    "ips_recall50",
    "ips_recall100_surface",
)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties: their mean rank
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    ra, rb = ranks(a[keep]), ranks(b[keep])
    return float(np.corrcoef(ra, rb)[0, 1])


def plan_changes(p, pairs: list[str]) -> dict:
    """{field: value} of `--plan FIELD=VALUE` arguments, each value parsed as the field's type."""
    types = {f.name: type(getattr(TrainingPlan(), f.name)) for f in fields(TrainingPlan)}
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in types:
            p.error(f"--plan takes FIELD=VALUE with a TrainingPlan field; got {pair!r} (fields: {', '.join(types)})")
        kind = types[name]
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--quick", action="store_true", help="a small world (tests, smoke runs)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated policies (default all: {','.join(ROWS)})")
    p.add_argument("--reference", default="random", help="the paired differences' reference policy")
    p.add_argument("--cache-dir", default=str(CACHE))
    p.add_argument("--threads", type=int, default=2, help="torch threads while training")
    p.add_argument("--serve-threads", type=int, default=1, help="torch threads while serving (1: no spin-waits)")
    p.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the lifecycle's TrainingPlan for this run (repeatable; e.g. pretrain_min_steps=600)",
    )
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--context", default="", help="what else ran on the machine (goes into the notes)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = set(rows) - set(ROWS) - set(ABLATION_ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; rows: {', '.join(ROWS + ABLATION_ROWS)}")
    if a.reference not in rows:
        p.error(f"the reference {a.reference!r} must be one of the rows")
    cfg = HarnessConfig.quick() if a.quick else HarnessConfig()
    t0 = time.perf_counter()
    run = log_run(cfg)
    log_s = time.perf_counter() - t0
    # the lifecycle's recipe, trained on a.threads threads; --quick: a smoke run of the whole
    # pipeline, not a measurement (a small model, the fewest steps)
    plan = replace(TrainingPlan(), threads=a.threads, **plan_changes(p, a.plan))
    if a.quick:
        plan = replace(plan, d_model=32, pretrain_epochs=1, pretrain_min_steps=20, finetune_min_steps=10)
    policies, trainer = model_policies(run, rows, Path(a.cache_dir) / ("quick" if a.quick else "full"), plan)
    train_s = time.perf_counter() - t0 - log_s
    torch.set_num_threads(a.serve_threads)
    fixed = {"random": RandomPolicy(cfg.seed), "popularity": PopularityPolicy(), "log-baseline": LogBaselinePolicy()}
    fixed["oracle"] = OraclePolicy()
    policies.update({k: v for k, v in fixed.items() if k in rows})
    outcomes, offline = {}, {}
    for name in rows:
        t = time.perf_counter()
        outcomes[name] = serve(policies[name], run)
        offline[name] = offline_measures(policies[name], run)
        print(
            json.dumps(
                {
                    "policy": name,
                    "served_s": round(outcomes[name].seconds, 1),
                    "offline_s": round(time.perf_counter() - t - outcomes[name].seconds, 1),
                    **{k: round(v["value"], 4) for k, v in offline[name].items()},
                }
            ),
            flush=True,
        )
    table = compare(outcomes, a.reference, cfg.world.n_items, cfg.bootstrap, cfg.seed)
    t = time.perf_counter()
    torch.set_num_threads(a.threads)
    queries = outcome_query_columns(policies, run)  # why outcome conditioning trades, or does not
    print(json.dumps({"outcome_queries_s": round(time.perf_counter() - t, 1)}), flush=True)
    for row in table:
        measures = offline[row["name"]]
        row["yardstick"] = round(measures[YARDSTICK]["value"], 4)
        row["yardstick_se"] = round(measures[YARDSTICK]["se"], 4)
        row.update(queries.get(row["name"], {}))
        for cand in CANDIDATES:
            row[f"offline_{cand}"] = round(measures[cand]["value"], 4)
    saves = [r["saves_per_1k"] for r in table]
    clicks = [r["clicks_per_1k"] for r in table]
    yard = {
        "name": "yardstick",
        "measure": YARDSTICK,
        "spearman_saves": round(spearman([r["yardstick"] for r in table], saves), 3),
        "spearman_clicks": round(spearman([r["yardstick"] for r in table], clicks), 3),
        "policies": len(table),
    }
    for cand in CANDIDATES:
        values = [r[f"offline_{cand}"] for r in table]
        yard[f"spearman_saves_{cand}"] = round(spearman(values, saves), 3)
        yard[f"spearman_clicks_{cand}"] = round(spearman(values, clicks), 3)
    # the pairs users tell apart (paired interval excluding 0) and how often each measure orders them so
    for cand in CANDIDATES:
        values = {r["name"]: r[f"offline_{cand}"] for r in table}
        for outcome in ("save", "click"):
            agree = pair_agreement(outcomes, values, outcome, cfg.bootstrap, cfg.seed)
            yard[f"resolved_pairs_{outcome}s"] = int(agree["pairs"])
            yard[f"agreement_{outcome}s_{cand}"] = round(agree["agreement"], 3)
    total = time.perf_counter() - t0
    harness = {
        "name": "harness",
        "total_seconds": round(total, 1),
        "log_seconds": round(log_s, 1),
        "train_seconds": round(train_s, 1),
        "models_trained": sum(1 for s in trainer.seconds.values() if s > 0),
        "models_from_cache": sum(1 for s in trainer.seconds.values() if s == 0),
        "serve_seconds": round(sum(o.seconds for o in outcomes.values()), 1),
    }
    print_table(table)
    print_table([yard])
    print_table([harness])
    changed = f" with {', '.join(a.plan)}" if a.plan else ""
    notes = (
        f"Harness {json.dumps(cfg.to_dict(), default=str)}. Models: the lifecycle's TrainingPlan defaults{changed} "
        f"(training seconds per model: {json.dumps({k: round(v, 1) for k, v in trainer.seconds.items()})}; "
        "0 = loaded from the cache). pinrec-save0: outcome weights click 1, save 0; pinrec-save1: click 0, "
        f"save 1. Offline measures on the logging policy's held-out days; {a.threads} torch threads training, "
        f"{a.serve_threads} serving. {a.context}"
    ).strip()
    if not a.no_write and not a.quick:
        write_results(
            NAME,
            [*table, yard, harness],
            {
                "yardstick/spearman_saves": 0.8,
                "yardstick/spearman_clicks": 0.8,
                "yardstick/policies": 10,
                "harness/total_seconds": 1200,
            },
            notes,
            lower_is_better={"total_seconds"},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
