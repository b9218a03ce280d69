"""train_throughput: training tokens/s at sequence length 200 vs this machine's matmul rate.

Measures, in one run: (1) the dense float32 matmul rate (torch, 2048x2048 and 4096x4096, median
of repeats), (2) full training steps (forward, full-softmax loss over all items, backward,
AdamW) of the pinrec configuration used for MovieLens-1M (d=128, 2 layers, 3,706 items) on
batches of 64 x 200 tokens, in float32 and in bf16 autocast. Model FLOPs per token are counted
analytically (3x the forward matmul FLOPs, the loss's backward recomputation not counted), and
`mfu_fp32` = achieved model FLOP/s / float32 matmul FLOP/s (target >= 0.30).

    PYTHONPATH=. .venv/bin/python -m benchmarks.train_throughput
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.results import argument_parser, median_time, print_table, write_results
from training.data import DataConfig, build_sequences  # noqa: F401  (documented entry point)
from training.loss import LossConfig
from training.model import PinRecConfig
from training.module import OptimConfig, PinRecModule

NAME = "train_throughput"
L, B, V = 200, 64, 3706


def matmul_gflops(dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = median_time(lambda: a @ b, repeats=7, warmup=2)
    return 2 * n**3 / t / 1e9


def flops_per_token(cfg: PinRecConfig, n_rows_per_token: float = 1.0) -> float:
    d, f = cfg.d_model, cfg.ffn_mult
    layer = 2 * (3 * d * d + d * d + 2 * f * d * d) + 2 * 2 * (L / 2) * d  # linears + causal attention
    token_mlp = 2 * (d * 2 * d + 2 * d * d)
    head = 2 * (3 * d * 2 * d + 2 * d * d) * n_rows_per_token
    loss = 2 * V * d * n_rows_per_token
    return 3 * (cfg.n_layers * layer + token_mlp + head + loss)


def synthetic_batch(rng: np.random.Generator, batch_size: int = B, seq_len: int = L) -> dict[str, torch.Tensor]:
    """A training batch of `batch_size` sequences of `seq_len` tokens (default 64 x 200)."""
    B, L = batch_size, seq_len  # noqa: N806  (short names for the shapes below)
    items = torch.from_numpy(rng.integers(1, V + 1, (B, L)))
    nxt = torch.from_numpy(rng.integers(1, V + 1, (B, L, 1, 1)))
    return {
        "items": items,
        "outcomes": torch.from_numpy(rng.integers(4, 9, (B, L))),
        "surfaces": torch.zeros(B, L, dtype=torch.long),
        "ts_days": torch.from_numpy(11_000 + np.cumsum(rng.random((B, L)), 1).astype(np.float32)),
        "log_gap": torch.from_numpy(rng.random((B, L)).astype(np.float32) * 8),
        "tgt_valid": torch.ones(B, L, 1, dtype=torch.bool),
        "tgt_outcome": torch.from_numpy(rng.integers(4, 9, (B, L, 1))),
        "tgt_offset": torch.zeros(B, L, 1, dtype=torch.long),
        "pos_ids": nxt,
        "pos_mask": torch.ones(B, L, 1, 1, dtype=torch.bool),
    }


def step_seconds(precision: str, steps: int, seq_len: int = L, batch_size: int = B) -> float:
    """Median seconds of one training step on `batch_size` x `seq_len` tokens."""
    torch.manual_seed(0)
    cfg = PinRecConfig(n_items=V, d_model=128, n_layers=2, n_heads=2, max_len=seq_len, dropout=0.2, multi_token=False)
    module = PinRecModule(cfg, LossConfig(full_softmax=True), OptimConfig()).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    batch = synthetic_batch(np.random.default_rng(0), batch_size, seq_len)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = module.training_loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return median_time(step, repeats=steps, warmup=2)


def main() -> None:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    peak32 = max(matmul_gflops(torch.float32, 2048), matmul_gflops(torch.float32, 4096))
    peak16 = matmul_gflops(torch.bfloat16, 2048)
    cfg = PinRecConfig(n_items=V, d_model=128, n_layers=2, n_heads=2, max_len=L)
    fpt = flops_per_token(cfg)
    rows = []
    for prec in ("fp32", "bf16"):
        s = step_seconds(prec, a.steps)
        tps = B * L / s
        rows.append(
            {
                "name": f"pinrec-d128-L200-{prec}",
                "tokens_per_s": round(tps),
                "step_s": round(s, 3),
                "model_gflops": round(tps * fpt / 1e9, 1),
                "matmul_fp32_gflops": round(peak32, 1),
                "matmul_bf16_gflops": round(peak16, 1),
                "mfu_fp32": round(tps * fpt / 1e9 / peak32, 3),
            }
        )
        print(rows[-1], flush=True)
    peak32_after = matmul_gflops(torch.float32, 2048)
    print_table(rows)
    notes = (
        f"Batches of {B} x {L} tokens, all positions trained, full softmax over {V} items, AdamW; "
        f"{fpt / 1e6:.2f} model MFLOP per trained token (3x forward matmul FLOPs). mfu_fp32 = model "
        f"FLOP/s over the float32 matmul rate measured in the same run (max of 2048/4096 squares; "
        f"2048 re-measured at the end: {peak32_after:.1f} GFLOP/s). The bf16 row runs under CPU autocast "
        f"(AMX where present), so its ratio to the float32 rate can exceed 1. {a.threads} threads; "
        f"run took {time.time() - t0:.0f} s."
    )
    write_results(NAME, rows, {"mfu_fp32": 0.30}, notes)


if __name__ == "__main__":
    main()
