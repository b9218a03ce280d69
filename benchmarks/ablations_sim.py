"""ablations_sim: PinRec's ideas on the simulated multi-surface world.

Rows (each adds one idea to the previous):
  uc        unconditioned: one "any outcome" query, single token ("next")
  oc        outcome-conditioned: one query per targeted outcome, single token
  oc-mt     outcome-conditioned, multi-token: queries for offsets next / session / day
  oc-mt-ft  oc-mt, then fine-tuned per surface on that surface's impressions (hard negatives)

Protocol: pretrain on days 1..N-2 (engagements, all surfaces); the future window is the last
two days. For each surface and targeted outcome (click, save) a row retrieves k items with its
queries for that outcome (uc: its single query), all offsets merged by score at an equal total
budget of k, seen items excluded, and scores unordered recall@k against the items the user
engaged with that outcome on that surface in the window. `recall@k` merges the click and save
queries (k total, half each) against every future engagement; `coverage` and `distinct` are
diversity of those merged lists.

    PYTHONPATH=. .venv/bin/python -m benchmarks.ablations_sim [--quick]
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.results import argument_parser, print_table, write_results
from events.contract import SURFACES
from training.data import DataConfig, build_sequences
from training.evaluate import evaluate_pinrec
from training.model import PinRecConfig
from training.module import OptimConfig
from training.train import TrainConfig, fine_tune, load_model, pretrain
from world.simulator import SimulatedWorld, SimulatorConfig

NAME = "ablations_sim"
WORK = Path("var/bench") / NAME
K = 50
OUTCOMES_T = ("click", "save")


def _world(quick: bool) -> SimulatorConfig:
    if quick:
        return SimulatorConfig(seed=0, n_users=300, n_items=800, n_topics=10, events_per_day=8000, n_days=6)
    return SimulatorConfig(seed=0, n_users=2000, n_items=3000, n_topics=20, events_per_day=40_000, n_days=16)


def main() -> None:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--quick", action="store_true", help="a small world, for a smoke run")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    wcfg = _world(a.quick)
    world = SimulatedWorld(wcfg)
    days = world.days()
    events = pd.concat([world.day(d) for d in days], ignore_index=True)
    day = events["event_ts"].dt.date
    hist_ev = events[day < days[-2]]
    fut_ev = events[day >= days[-2]]
    out = WORK / ("quick" if a.quick else "full")
    base = PinRecConfig(n_items=0, d_model=64, n_layers=2, n_heads=2, max_len=100, dropout=0.2)
    variants = {
        "uc": replace(base, outcome_conditioning=False, multi_token=False),
        "oc": replace(base, outcome_conditioning=True, multi_token=False),
        "oc-mt": replace(base, outcome_conditioning=True, multi_token=True),
    }
    train = TrainConfig(max_epochs=a.epochs, progress_bar=False, threads=a.threads)
    data = DataConfig(batch_size=64)
    optim = OptimConfig(lr=2e-3, warmup_steps=20)
    models, secs = {}, {}
    for name, mc in variants.items():
        t0 = time.perf_counter()
        res = pretrain(hist_ev, out / name, mc, data, optim_cfg=optim, train_cfg=train)
        models[name] = {s: res.model for s in SURFACES}
        secs[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    models["oc-mt-ft"] = {}
    for s in SURFACES:
        ft = fine_tune(
            hist_ev,
            s,
            out / "oc-mt",
            out / f"oc-mt-ft-{s}",
            data,
            optim_cfg=OptimConfig(lr=5e-4, warmup_steps=5),
            train_cfg=replace(train, max_epochs=a.ft_epochs),
            n_hard=16,
        )
        models["oc-mt-ft"][s] = ft.model
    secs["oc-mt-ft"] = secs["oc-mt"] + time.perf_counter() - t0

    vocab = load_model(out / "uc").item_ids.numpy()
    hist = build_sequences(hist_ev, vocab)
    rows = []
    for name, per_surface in models.items():
        m0 = per_surface[SURFACES[0]]
        offsets = m0.cfg.offsets[:3]
        row: dict = {"name": name}
        vals = {o: [] for o in OUTCOMES_T}
        for s in SURFACES:
            fut = build_sequences(fut_ev[fut_ev["surface"] == s], vocab)
            m = per_surface[s]
            for o in OUTCOMES_T:
                q = "any" if not m.cfg.outcome_conditioning else o
                budget = {(q, f): 1.0 for f in offsets}
                r = evaluate_pinrec(m, hist, fut, budget, K, outcomes=[o])
                row[f"recall@{K}/{s}/{o}"] = r[f"recall@{K}/{o}"]
                vals[o].append(r[f"recall@{K}/{o}"])
        for o in OUTCOMES_T:
            row[f"recall@{K}/{o}"] = float(np.mean(vals[o]))
        # merged: every outcome's queries, k total (equal outcome shares), all surfaces' futures
        fut_all = build_sequences(fut_ev, vocab)
        qs = ["any"] if not m0.cfg.outcome_conditioning else list(OUTCOMES_T)
        budget = {(q, f): 1.0 for q in qs for f in offsets}
        r = evaluate_pinrec(per_surface["homefeed"], hist, fut_all, budget, K)
        row[f"recall@{K}"] = r[f"recall@{K}"]
        row["distinct"] = r["distinct_per_list"]
        row["coverage"] = r["coverage"]
        row["train_seconds"] = round(secs[name], 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows)
    notes = (
        f"Simulated world {json.dumps(wcfg.to_dict())}; pretrain on all days but the last two, "
        f"future window = last two days; d_model=64, 2 layers, {a.epochs} epochs, fine-tuning "
        f"{a.ft_epochs} epochs per surface (oc-mt-ft uses the homefeed model for the merged "
        "recall). Same seeds for every row."
    )
    if not a.quick:
        write_results(NAME, rows, {}, notes)


if __name__ == "__main__":
    main()
