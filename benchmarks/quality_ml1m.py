"""quality_ml1m: MovieLens-1M, public protocol (leave-one-out, full ranking, seen filtered).

Rows: `popularity`, `sasrec` (every PinRec switch off: item ids only, no outcome conditioning,
single token, no logQ, no fine-tuning), `pinrec` (the best configuration found). Each trained
row selects its epoch on the validation split (second-to-last item) and reports the test split
(last item); `train_seconds` is the wall time of `fit` (validation passes included).

    PYTHONPATH=. .venv/bin/python -m benchmarks.quality_ml1m              # all rows, then write
    PYTHONPATH=. .venv/bin/python -m benchmarks.quality_ml1m --rows sasrec --threads 1
    PYTHONPATH=. .venv/bin/python -m benchmarks.quality_ml1m --collect    # write from finished rows

Rows run as separate processes are stored in var/bench/quality_ml1m/<row>.json and collected.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.results import argument_parser, print_table, write_results
from events.contract import OUTCOME_CODE, OUTCOMES
from events.sources import MovieLensSource
from training.data import DataConfig, PinRecDataModule
from training.evaluate import evaluate_popularity, evaluate_public_model
from training.loss import LossConfig
from training.model import PinRecConfig
from training.module import OptimConfig
from training.train import TrainConfig, pretrain

NAME = "quality_ml1m"
WORK = Path("var/bench") / NAME
TARGETS = {"hr@10": 0.34, "ndcg@10": 0.195, "train_seconds": 3600}
ANCHORS = (
    "Meta generative-recommenders README (same protocol), HR@10/NDCG@10: "
    "SASRec 0.2853/0.1603, HSTU 0.3097/0.1720, HSTU-large 0.3294/0.1893."
)


def row_configs(n_items: int, max_time_s: float) -> dict[str, dict]:
    common = dict(n_items=n_items, d_model=128, n_layers=2, n_heads=2, max_len=200, dropout=0.2)
    sas = PinRecConfig(**common, side_inputs=False, outcome_conditioning=False, multi_token=False)
    pin = PinRecConfig(**common, side_inputs=True, outcome_conditioning=True, multi_token=False)
    epochs = 200  # the wall-clock cap stops training first
    return {
        "sasrec": dict(
            model=sas,
            loss=LossConfig(full_softmax=True, logq=False),
            data=DataConfig(batch_size=128, p_any_outcome=0.0),
            optim=OptimConfig(lr=2e-3, schedule="cosine_time", eval_mix=[("any", 1.0)]),
            train=TrainConfig(max_epochs=epochs, max_time_s=max_time_s, precision="bf16-mixed", progress_bar=False),
        ),
        "pinrec": dict(
            model=pin,
            loss=LossConfig(full_softmax=True, logq=True),
            data=DataConfig(batch_size=128, p_any_outcome=0.5),
            optim=OptimConfig(lr=2e-3, schedule="cosine_time", eval_mix=[("any", 1.0)]),
            train=TrainConfig(max_epochs=epochs, max_time_s=max_time_s, precision="bf16-mixed", progress_bar=False),
        ),
    }


def run_row(row: str, events, max_time_s: float) -> dict:
    base = PinRecDataModule.from_events(events, DataConfig(), split="leave_one_out")
    if row == "popularity":
        return {"name": row, **evaluate_popularity(base.train_seqs, base.test), "train_seconds": 0.0}
    cfg = row_configs(base.n_items, max_time_s)[row]
    cfg["train"].threads = torch.get_num_threads()
    out = WORK / row
    res = pretrain(
        base.with_config(**asdict(cfg["data"])),
        out,
        cfg["model"],
        cfg["data"],
        cfg["loss"],
        cfg["optim"],
        cfg["train"],
        split="leave_one_out",
    )
    mix, val = cfg["optim"].eval_mix, None
    if res.model.cfg.outcome_conditioning:
        # the test query never sees the target's outcome: choose, on the validation split, between
        # the "any outcome" query and the mixture of per-rating queries weighted by the training
        # outcome shares (fixed in advance), then report the test split with the choice
        mix, val = choose_mix(res.model, base)
    test = evaluate_public_model(res.model, base.test, mix)
    return {
        "name": row,
        **test,
        "train_seconds": round(res.train_seconds, 1),
        "epochs": res.epochs,
        "best_epoch": res.best_val.get("epoch"),
        "val_ndcg@10": val or res.best_val.get("val/ndcg@10"),
        "eval_query": "any" if len(mix) == 1 else "rating-mixture",
    }


def choose_mix(model, base) -> tuple[list[tuple[str, float]], float]:
    codes = base.train_seqs.outcomes
    prior = [(o, float((codes == OUTCOME_CODE[o]).mean())) for o in OUTCOMES if (codes == OUTCOME_CODE[o]).any()]
    best = None
    for mix in ([("any", 1.0)], prior):
        v = evaluate_public_model(model, base.valid, mix)["ndcg@10"]
        print("validation ndcg@10", mix, round(v, 4), flush=True)
        if best is None or v > best[1]:
            best = (mix, v)
    return best


def collect() -> list[dict]:
    rows = []
    for row in ("popularity", "sasrec", "pinrec"):
        p = WORK / f"{row}.json"
        if p.exists():
            rows.append(json.loads(p.read_text()))
    return rows


def write(rows: list[dict]) -> None:
    print_table(rows)
    notes = (
        ANCHORS + " Trained on this machine's CPU (2 cores), bf16 autocast, full softmax over all "
        "3,706 items; epoch chosen on the validation split; test = last item per user. pinrec's test "
        "query never uses the target's outcome: 'eval_query' is the one chosen on the validation split "
        "between the 'any outcome' query and a mixture of per-rating queries weighted by training "
        "outcome shares. train_seconds = cumulative wall time of fit (validation passes included; a "
        "run resumed from its checkpoint adds its segments). Learning rate: cosine over the wall-clock "
        "budget (schedule cosine_time), so the last epochs run at a low rate. sasrec (2026-11-22, "
        "15:09-16:13 UTC) trained concurrently with an earlier pinrec run, one thread each at nice 8, "
        "while other developers' test runs shared the 2 cores (load average 7-8): 17 epochs each "
        "(~210 s per epoch); that pinrec run reached HR@10 0.3022 / NDCG@10 0.1722 (sasrec 0.2952 / "
        "0.1700 under the same conditions). The pinrec row is a re-run alone on the idle machine, "
        "2 threads, 16:44-17:45 UTC, capped at 3,540 s so that fit stays within "
        "3,600 s: 29 epochs (~125 s per epoch, ~20 s of it validation). Configs: "
        + json.dumps({r: {k: asdict(v) for k, v in c.items()} for r, c in row_configs(3706, 0).items()})
    )
    write_results(NAME, rows, TARGETS, notes)


def main() -> None:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--rows", default="popularity,sasrec,pinrec")
    p.add_argument("--max-time-s", type=float, default=3600.0, help="training wall-clock cap per row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--collect", action="store_true", help="only write results from finished rows")
    a = p.parse_args()
    if not a.collect:
        torch.set_num_threads(a.threads)
        events = MovieLensSource("movielens-1m", Path("var/cache")).events()
        WORK.mkdir(parents=True, exist_ok=True)
        for row in a.rows.split(","):
            t0 = time.perf_counter()
            r = run_row(row, events, a.max_time_s)
            (WORK / f"{row}.json").write_text(json.dumps(r))
            print(json.dumps(r), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    write(collect())


if __name__ == "__main__":
    main()
