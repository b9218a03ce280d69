"""How often the canary gates decide wrongly, measured in the closed-loop world (issue 27).

Online (the `online_canary_gate` rule, `serving.evaluation.online_gate`, with the deployment's
defaults and canary traffic): trials in the paired harness's world (`world.policy_loop`), the
champion being the lifecycle's fine-tuned PinRec model served through `LoadedVersion`
(`world.policy_loop.trials`: a hashed share of users on the canary, one shared log, judged after
each served day until the trial decides):

- `aa`: the canary is the champion's own weights published again; each trial another split of
  the users (salt), on every surface: `false_rollback_rate` (rolled back), `mean_trial_days`;
- `worse`: the canary is the popularity policy (a real, worse recommender): `caught_rate`
  (rolled back), `mean_trial_days`; `worse-random`: the canary is a random list.

Offline (`offline-aa`: the `canary_gate` rule, `serving.evaluation.gate`, with the deployment's
policy): the champion is the fine-tuned model of a surface, each candidate the same surface
fine-tuned again from the same pretrained model and data with another seed; both evaluated on
the first held-out day of the logging policy as `canary_evaluation` evaluates them
(`serving.evaluation.figures.day_figures`: recall, ranking of the day's slates, interleaved
latency, the baselines, the yardstick): `false_refusal_rate`, and the rules that refused.

Targets: `aa:false_rollback_rate <= 0.05`, `worse:caught_rate >= 0.95`,
`offline-aa:false_refusal_rate <= 0.05`. Run alone on the machine (latency is a gate figure).

    python -m benchmarks.canary_calibration [--salts 20] [--worse-salts 14] [--offline 21]
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.results import argument_parser, print_table, write_results
from events.contract import SURFACES
from events.vocabulary import builtin_vocabulary
from serving.evaluation.online_gate import PROMOTE, ROLL_BACK, OnlinePolicy
from world.policy_loop.harness import HarnessConfig, log_run, play_days, start_view, with_days
from world.policy_loop.models import ModelTrainer, loaded_version, model_policies
from world.policy_loop.policies import PopularityPolicy, RandomPolicy
from world.policy_loop.trials import TrialResult, aa_trials, split_trials

NAME = "canary_calibration"
CACHE = Path("var/bench") / "policy_loop" / "models"  # policy_loop's models: the same recipe and log
CANARY_TRAFFIC = 0.25  # the deployment's default (PINREC_CANARY_TRAFFIC)
EVALUATION_USERS = 400  # canary_evaluation's default max_users


def trial_row(name: str, trials: list[TrialResult], rate_name: str, action: str) -> dict:
    decided = [t for t in trials if t.action in (PROMOTE, ROLL_BACK)]
    return {
        "name": name,
        "trials": len(trials),
        rate_name: round(float(np.mean([t.action == action for t in trials])), 4),
        "mean_trial_days": round(float(np.mean([t.days for t in trials])), 2),
        "undecided": len(trials) - len(decided),
        **{
            f"{rate_name}_{s}": round(float(np.mean([t.action == action for t in trials if t.surface == s])), 3)
            for s in SURFACES
        },
        "early_rollbacks": sum(1 for t in trials if t.action == ROLL_BACK and "significantly worse" in t.reason),
    }


def offline_aa(run, trainer: ModelTrainer, evaluations: int, latency_rounds: int) -> tuple[dict, list[dict]]:
    """The offline gate on candidates retrained with another seed (module docstring)."""
    from assets.lifecycle.canary import CANARY_K, CanaryGateConfig
    from serving.evaluation.figures import day_figures
    from serving.evaluation.gate import Verdict, gate_rules
    from training.train import load_model

    vocab = builtin_vocabulary()
    day = run.serve_days[0]
    held = run.heldout_events
    events_all = held[held["event_ts"].dt.date == day]
    log_all = run.heldout_serving_log[run.heldout_serving_log["ts"].dt.date == day]
    details = []
    for i in range(evaluations):
        surface, seed = SURFACES[i % len(SURFACES)], 1 + i
        champion = loaded_version(load_model(trainer.finetuned("pinrec", surface)), surface, "champion")
        candidate = loaded_version(load_model(trainer.finetuned("pinrec", surface, seed=seed)), surface, "candidate")
        events = events_all[events_all["surface"] == surface]
        outcomes = [o for o in vocab.engaged if (events["outcome"] == o).any()]
        users = sorted(set(events.loc[events["outcome"] != vocab.impression, "user_id"].tolist()))
        users = users[:: max(1, len(users) // EVALUATION_USERS)][:EVALUATION_USERS]
        events = events[events["user_id"].isin(users)]
        sequences = {u: run.sequences.get(u) for u in users}
        train = run.train_events[run.train_events["surface"] == surface]
        figures = day_figures(
            {"candidate": candidate, "champion": champion},
            sequences,
            events,
            log_all[log_all["surface"] == surface],
            train,
            vocab,
            users,
            k=CANARY_K,
            outcomes=outcomes,
            latency_rounds=latency_rounds,
        )
        random_measured = figures.yardstick in figures.baselines.get("random", {})
        policy = CanaryGateConfig().policy(vocab.guarded, figures.yardstick, random_measured)
        candidate_figures, champion_figures = figures.versions["candidate"], figures.versions["champion"]
        rules = gate_rules(candidate_figures, champion_figures, policy, baselines=figures.baselines)
        verdict = Verdict.of(rules)
        y = figures.yardstick
        details.append(
            {
                "surface": surface,
                "seed": seed,
                "passed": verdict.passed,
                "refused_by": [r.rule + ": " + r.metric for r in rules if not r.passed],
                "candidate_yardstick": figures.versions["candidate"].get(y),
                "champion_yardstick": figures.versions["champion"].get(y),
            }
        )
        print(f"offline-aa {i + 1}/{evaluations} {surface} seed {seed}: {verdict.line}", flush=True)
    refused_by = Counter(rule for d in details for rule in d["refused_by"])
    row = {
        "name": "offline-aa",
        "evaluations": len(details),
        "false_refusal_rate": round(float(np.mean([not d["passed"] for d in details])), 4),
        **{
            f"false_refusal_rate_{s}": round(float(np.mean([not d["passed"] for d in details if d["surface"] == s])), 3)
            for s in SURFACES
        },
        "refusals_by_rule": json.dumps(dict(refused_by)),
        "mean_abs_yardstick_difference": round(
            float(np.mean([abs(d["candidate_yardstick"] - d["champion_yardstick"]) for d in details])), 4
        ),
    }
    return row, details


def main(argv: list[str] | None = None) -> int:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--salts", type=int, default=20, help="A/A splits (each judged on every surface)")
    p.add_argument("--worse-salts", type=int, default=14, help="splits per worse canary (each on every surface)")
    p.add_argument("--offline", type=int, default=21, help="offline A/A evaluations (seeds, over the surfaces)")
    p.add_argument("--latency-rounds", type=int, default=3, help="canary_evaluation's default")
    p.add_argument("--cache-dir", default=str(CACHE))
    p.add_argument("--quick", action="store_true", help="a small world and few trials (tests, smoke runs)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--context", default="", help="what else ran on the machine (goes into the notes)")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    policy = OnlinePolicy()
    # the harness's world and log (policy_loop's models), served for as many days as a trial may last
    cfg = HarnessConfig.quick() if a.quick else with_days(HarnessConfig(), serve_days=policy.max_days)
    if a.quick:
        a.salts, a.worse_salts, a.offline = 2, 1, 2
        policy = OnlinePolicy(max_days=cfg.serve_days)
    run = log_run(cfg)
    policies, trainer = model_policies(run, ["pinrec"], a.cache_dir)
    champion = policies["pinrec"]
    torch.set_num_threads(1)  # serving: one thread (no spin-waits), as policy_loop serves
    t = time.perf_counter()
    champion_days = [r.serving_log for r in play_days(champion, start_view(run), run.serve_days[: policy.max_days])]
    aa = aa_trials(champion_days, range(a.salts), CANARY_TRAFFIC, policy)
    aa_seconds = time.perf_counter() - t
    t = time.perf_counter()
    worse = split_trials(run, champion, PopularityPolicy(), range(1000, 1000 + a.worse_salts), CANARY_TRAFFIC, policy)
    worse_random = split_trials(
        run, champion, RandomPolicy(seed=7), range(2000, 2000 + a.worse_salts), CANARY_TRAFFIC, policy
    )
    worse_seconds = time.perf_counter() - t
    rows = [
        {**trial_row("aa", aa, "false_rollback_rate", ROLL_BACK), "seconds": round(aa_seconds, 1)},
        {**trial_row("worse", worse, "caught_rate", ROLL_BACK), "seconds": round(worse_seconds, 1)},
        trial_row("worse-random", worse_random, "caught_rate", ROLL_BACK),
    ]
    torch.set_num_threads(2)
    t = time.perf_counter()
    offline_row, details = offline_aa(run, trainer, a.offline, a.latency_rounds)
    offline_row["seconds"] = round(time.perf_counter() - t, 1)
    rows.append(offline_row)
    total = round(time.perf_counter() - t0, 1)
    print_table(rows)
    log_ratios = pd.DataFrame([t.__dict__ for t in aa]).groupby("surface")["log_ratio"].std().round(4).to_dict()
    notes = (
        f"Harness world {json.dumps(cfg.world.to_dict(), default=str)}; champion: the lifecycle's fine-tuned PinRec "
        f"(TrainingPlan defaults, policy_loop's model cache). Online rule {json.dumps(policy.__dict__)} (target "
        f"standard error {policy.target_se:.4f}, loser boundary {policy.loser_z:.2f} standard errors), canary "
        f"traffic {CANARY_TRAFFIC}; trials start on the first served day (day {cfg.train_days + 1}); A/A trials are "
        f"{a.salts} splits of one champion run, each judged on {len(SURFACES)} surfaces (spread of the A/A "
        f"ln(canary/champion) at decision, per surface: {json.dumps(log_ratios)}). Offline A/A: candidates "
        f"fine-tuned with seeds 1..{a.offline} against seed 0, on day {cfg.train_days + 1}, "
        f"{EVALUATION_USERS} users, the deployment's CanaryGateConfig; per evaluation: {json.dumps(details)}. "
        f"Total {total} s. {a.context}"
    ).strip()
    if not a.no_write and not a.quick:
        write_results(
            NAME,
            rows,
            {"aa/false_rollback_rate": 0.05, "worse/caught_rate": 0.95, "offline-aa/false_refusal_rate": 0.05},
            notes,
            lower_is_better={"false_rollback_rate", "false_refusal_rate"},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
