"""ablations_sim: PinRec's ideas on the simulated world, judged by the offline yardstick.

Rows (each adds one idea to the previous; the last is the lifecycle's recipe as it is):
  uc        unconditioned: one "any outcome" query, single token ("next")
  oc        outcome-conditioned: one query per targeted outcome, single token
  oc-mt     outcome-conditioned, multi-token: queries for offsets next / session / day
  oc-mt-ft  oc-mt, then fine-tuned per surface on that surface's impressions (hard negatives)
  pinrec    the lifecycle's recipe (ranking head beside, fine-tuned per surface), /v1/retrieve

Protocol: the paired harness's log (`world.policy_loop`: a popularity logging policy with a 5%
exploration share plays days 1-7, the training log, and days 8-17, the held-out log). Every row's
models are trained with the lifecycle's `TrainingPlan` by the harness's trainer and cached with
`policy_loop`'s (a run after `policy_loop` trains nothing). Each row lists its top 100 per (user,
surface, search query) as of day 8 through the serving path, and is judged by the yardstick
(`serving.evaluation.replay`: the engagement rate of the held-out impressions its lists hold):
`replay@100` overall with its standard error, per surface, and with saves and clicks counted
apart (`replay@100/save`: the save rate of those impressions); `replay_position@100` (the
yardstick that ranks policies over many days as users do: `RANKING_YARDSTICK`) with its SE;
`recall@50` of the held-out days' engagements by the homefeed top 50 (the measure this
benchmark used before: docs/yardstick.md shows it ranks policies against what users do) for
comparison; `coverage@100` (distinct listed items / catalogue). What users did with these
models served: `benchmarks/results/policy_loop.md`, rows of the same names.

    PYTHONPATH=. .venv/bin/python -m benchmarks.ablations_sim [--quick]
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.policy_loop import CACHE
from benchmarks.results import argument_parser, print_table, write_results
from events.contract import SURFACES
from serving.evaluation.replay import policy_lists, replay_measures
from serving.evaluation.yardstick import RANKING_YARDSTICK, YARDSTICK, YARDSTICK_K, logged_impressions, recall_at_k
from training.plan import TrainingPlan
from world.policy_loop.harness import HarnessConfig, log_run, policy_lister, start_view
from world.policy_loop.models import model_policies

NAME = "ablations_sim"
ROWS = ("uc", "oc", "oc-mt", "oc-mt-ft", "pinrec")
RECALL_K = 50


def main(argv: list[str] | None = None) -> int:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--quick", action="store_true", help="a small world, for a smoke run")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = HarnessConfig.quick() if a.quick else HarnessConfig()
    t0 = time.perf_counter()
    run = log_run(cfg)
    plan = replace(TrainingPlan(), threads=a.threads)
    if a.quick:
        plan = replace(plan, d_model=32, pretrain_epochs=1, pretrain_min_steps=20, finetune_min_steps=10)
    policies, trainer = model_policies(run, list(ROWS), Path(CACHE) / ("quick" if a.quick else "full"), plan)
    torch.set_num_threads(1)
    heldout, log = run.heldout_events, run.heldout_serving_log
    impressions = logged_impressions(heldout, log)
    by_outcome = {o: logged_impressions(heldout, log, positive=(o,)) for o in ("save", "click")}
    rows = []
    for name in ROWS:
        t = time.perf_counter()
        policy = policies[name]
        view = start_view(run)
        policy.start_day(view)
        lists = policy_lists(policy_lister(policy, view, run), impressions, YARDSTICK_K)
        measured = replay_measures(lists, impressions, (YARDSTICK_K,))
        overall, ranking = measured[YARDSTICK], measured[RANKING_YARDSTICK]
        row: dict = {"name": name, YARDSTICK: round(overall["value"], 4), f"{YARDSTICK}_se": round(overall["se"], 4)}
        row[RANKING_YARDSTICK] = round(ranking["value"], 4)
        row[f"{RANKING_YARDSTICK}_se"] = round(ranking["se"], 4)
        for surface in SURFACES:
            part = impressions[impressions["surface"] == surface]
            row[f"{YARDSTICK}/{surface}"] = round(replay_measures(lists, part, (YARDSTICK_K,))[YARDSTICK]["value"], 4)
        for outcome, frame in by_outcome.items():
            row[f"{YARDSTICK}/{outcome}"] = round(replay_measures(lists, frame, (YARDSTICK_K,))[YARDSTICK]["value"], 4)
        homefeed = {user: items[:RECALL_K] for (user, surface, query), items in lists.items() if surface == "homefeed"}
        row[f"recall@{RECALL_K}"] = round(recall_at_k(homefeed, heldout)["value"], 4)
        listed = {i for items in lists.values() for i in items}
        row[f"coverage@{YARDSTICK_K}"] = round(len(listed) / cfg.world.n_items, 4)
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows)
    notes = (
        f"Harness {json.dumps(cfg.to_dict(), default=str)}; the lifecycle's TrainingPlan (training seconds per "
        f"model: {json.dumps({k: round(v, 1) for k, v in trainer.seconds.items()})}; 0 = loaded from policy_loop's "
        f"cache). Total {time.perf_counter() - t0:.0f} s. The served figures of the same models are policy_loop's."
    )
    if not a.quick:
        write_results(NAME, rows, {}, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
