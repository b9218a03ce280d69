"""Pretrain and fine-tune entry points, checkpoints, and a CLI.

    pretrain(events, out_dir, ...)                    engagement sequences from all surfaces
    fine_tune(events, surface, base_dir, out_dir, ...) one surface's targets, its impressed-but-
                                                       not-engaged items as hard negatives
    load_model(out_dir) -> PinRec                      from model.pt + config.json

A finished run's directory holds `model.pt` (the model's state_dict only: loadable with
`torch.load(path, weights_only=True)`; it includes the `item_ids` buffer, index -> raw item id)
and `config.json` (model, data, loss, optimiser and training configs, plus results). Lightning's
own checkpoints (`lightning/last.ckpt`, written after every epoch, and `lightning/best.ckpt` when
validating) hold tensors and plain containers only and are reloaded with `weights_only=True`: a
run started again with the same `out_dir` (after it finished, or was killed) resumes from
`last.ckpt`, at the epoch after the last one finished. Logs: `logs/` (CSV), progress bar on stdout.

Scale-out. `TrainConfig.accelerator / devices / num_nodes / strategy` go to Lightning's Trainer
(defaults: one CPU process). `DataConfig.batch_size` is the global batch: with W processes each
takes batch_size / W windows of every planned batch (`training.data`), so the optimiser sees the
same batches, steps and learning-rate schedule as one process; validation metrics are computed
over every validation user (the processes' ranks are gathered). Multi-process runs start from the
CLI (Lightning re-runs the same command for each local process) or under torchrun / SLURM; only
global rank 0 writes `model.pt` and `config.json`. See docs/training-scale-out.md.

CLI: `python -m training.train --help`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from events.catalogue import Catalogue
from training.cooccurrence import CoImpressions, seed_item_table
from training.data import (
    DataConfig,
    PinRecDataModule,
    build_sequences,
    item_log_popularity,
)
from training.item_embedding import set_item_fields
from training.loss import LossConfig
from training.model import PinRec, PinRecConfig
from training.module import OptimConfig, PinRecModule
from training.queries import seed_search_table
from training.ranking import RankingConfig, prepare_ranking
from training.steps import size_run
from training.whole_log import co_impressions_for, exposure_for

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


log = logging.getLogger("training.train")  # per-epoch JSON lines at INFO (`--verbose`, the training CLI)
# Lightning 2.6 builds torch's deprecated LeafSpec itself (lightning/pytorch/utilities/_pytree.py):
# the deprecation is Lightning's to fix, and it would be printed on every fit.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@dataclass
class TrainConfig:
    max_epochs: int = 20
    max_time_s: float | None = None  # wall-clock cap for fit (validation included)
    seed: int = 0
    precision: str = "32-true"  # "bf16-mixed" uses the CPU's bf16 units (AMX) if present
    threads: int = 2
    patience: int | None = None  # early stopping on val/ndcg@10 (with validation data)
    min_steps: int = 0  # optimiser steps at least: more epochs when max_epochs gives fewer (training.steps)
    max_steps: int = 0  # optimiser steps at most (0: no budget): the run stops there (training.steps)
    val_every_n_epochs: int = 1
    progress_bar: bool = True
    log_every_n_steps: int = 10
    # scale-out (Lightning Trainer arguments); DataConfig.batch_size stays the global batch
    accelerator: str = "cpu"  # "cpu", "gpu", "auto", ...
    devices: int | str = 1  # processes (CPU) or GPUs per node: 2, "auto", -1, "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # "auto", "ddp" (gloo on CPU, nccl on GPU), ...


@dataclass
class TrainResult:
    out_dir: Path
    model: PinRec
    train_seconds: float
    epochs: int
    best_val: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    global_rank: int = 0
    world_size: int = 1
    ranking: dict[str, Any] = field(default_factory=dict)  # whether the ranking head trained, and why not
    run_size: list[str] = field(default_factory=list)  # what training.steps changed in the plan (log lines)


class _History(Callback):
    """Per-epoch validation metrics, times and the training tokens each process consumed (kept in
    memory, written to config.json)."""

    def __init__(self):
        self.rows: list[dict[str, Any]] = []
        self._t0 = self._tv = time.perf_counter()
        self._train_s = float("nan")
        self._tokens = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._train_s = float("nan")
        self._tokens = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._tokens += int((batch["items"] > 0).sum())

    def on_validation_epoch_start(self, trainer, pl_module):
        self._tv = time.perf_counter()
        if trainer.training or not trainer.sanity_checking:
            self._train_s = self._tv - self._t0

    def on_train_epoch_end(self, trainer, pl_module):
        total = time.perf_counter() - self._t0
        row = {
            "epoch": trainer.current_epoch,
            "epoch_s": total,
            "train_s": self._train_s if self._train_s == self._train_s else total,
        }
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        tokens = trainer.strategy.all_gather(torch.tensor([self._tokens], device=pl_module.device))
        row["tokens_per_rank"] = tokens.view(-1).tolist()
        self.rows.append(row)
        if trainer.is_global_zero:
            log.info(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


def _config_dict(**parts: Any) -> dict[str, Any]:
    return {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in parts.items()}


def save_model(model: PinRec, out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write `model.pt` (state_dict only) and `config.json` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / MODEL_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    return out


def load_config(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / CONFIG_FILE).read_text())


def load_model(out_dir: str | Path) -> PinRec:
    """The model of a finished run: config.json's model config + model.pt (weights_only=True)."""
    cfg = PinRecConfig.from_dict(load_config(out_dir)["model"])
    model = PinRec(cfg)
    model.load_state_dict(torch.load(Path(out_dir) / MODEL_FILE, weights_only=True, map_location="cpu"))
    return model.eval()


def _as_datamodule(
    data: PinRecDataModule | pd.DataFrame | str | Path,
    data_cfg: DataConfig,
    split: str,
    vocab=None,
    hard_negatives: bool = False,
) -> PinRecDataModule:
    if isinstance(data, PinRecDataModule):
        return data.with_config(**_shallow(data_cfg))
    if isinstance(data, (str, Path)):
        data = pd.read_parquet(data)
    return PinRecDataModule.from_events(data, data_cfg, split=split, vocab=vocab, hard_negatives=hard_negatives)


def _fit(
    dm: PinRecDataModule,
    out_dir: Path,
    model_cfg: PinRecConfig,
    loss_cfg: LossConfig,
    optim_cfg: OptimConfig,
    train_cfg: TrainConfig,
    kind: str,
    init_state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    rank_cfg: RankingConfig | None = None,
    ranking: dict[str, Any] | None = None,
    co_impressions: CoImpressions | None = None,
    exposure: torch.Tensor | None = None,
    events: pd.DataFrame | None = None,
    catalogue: Catalogue | None = None,
) -> TrainResult:
    torch.set_num_threads(train_cfg.threads)
    pl.seed_everything(train_cfg.seed, workers=True, verbose=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dm.setup()
    steps = (train_cfg.max_epochs, optim_cfg.warmup_steps, train_cfg.min_steps, optim_cfg.max_warmup_fraction)
    size = size_run(len(dm.train_ds), *steps, max_steps=train_cfg.max_steps)
    for note in size.notes:
        print(json.dumps({kind: note}), flush=True)
    train_cfg = replace(train_cfg, max_epochs=size.epochs)
    optim_cfg = replace(optim_cfg, warmup_steps=size.warmup_steps)
    if optim_cfg.schedule == "cosine" and optim_cfg.total_steps <= 0:
        optim_cfg = replace(optim_cfg, total_steps=size.total_steps)
    if optim_cfg.schedule == "cosine_time" and optim_cfg.time_budget_s <= 0:
        if not train_cfg.max_time_s:
            raise ValueError('schedule "cosine_time" needs TrainConfig.max_time_s (the wall-clock budget)')
        optim_cfg = replace(optim_cfg, time_budget_s=float(train_cfg.max_time_s))
    ranking = ranking or {"ranking": False}
    module = PinRecModule(
        model_cfg,
        loss_cfg,
        optim_cfg,
        item_log_popularity(dm.train_seqs),
        torch.from_numpy(dm.train_seqs.vocab),
        seed=train_cfg.seed,
        rank_cfg=rank_cfg,
        engaged_columns=tuple(ranking.get("engaged_columns", ())),
        co_impressions=co_impressions,
    )
    seqs = dm.train_seqs
    set_item_fields(module.model, catalogue, seqs.vocab)  # None: none, or fine-tuning's base codes
    if module.model.search_emb is not None and seqs.query_vocab is not None:
        module.model.query_ids.copy_(torch.from_numpy(seqs.query_vocab))  # raw query id of each row
    if optim_cfg.seed_items and init_state is None and co_impressions is not None:
        seed_item_table(module.model, co_impressions, train_cfg.seed, optim_cfg.seed_norm)
        if events is not None and seqs.query_vocab is not None:  # queries start where their items sit
            seed_search_table(module.model, events, seqs.vocab, seqs.query_vocab)
    if init_state is not None:
        if module.model.ranker is None:  # a base with a ranking head, fine-tuned without slates
            init_state = {k: v for k, v in init_state.items() if not k.startswith("ranker.")}
        module.model.load_state_dict(init_state)
    if exposure is not None:
        module.fix_exposure(exposure)
    has_val = dm.valid is not None
    ckpt_dir = out_dir / "lightning"
    callbacks: list[Callback] = [_History()]
    # last.ckpt holds the newest epoch's state, rewritten after every epoch, so a killed run resumes
    # from its last finished epoch. (`save_last=True` with `save_top_k=0` would write it only when
    # fit ends: Lightning saves "last" only in a step where a top-k checkpoint was saved.)
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False))
    if has_val:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best",
                monitor="val/ndcg@10",
                mode="max",
                save_top_k=1,
                enable_version_counter=False,
            )
        )
        if train_cfg.patience:
            callbacks.append(pl.callbacks.EarlyStopping("val/ndcg@10", mode="max", patience=train_cfg.patience))
    trainer = pl.Trainer(
        max_epochs=train_cfg.max_epochs,
        max_steps=size.total_steps if train_cfg.max_steps else -1,
        max_time={"seconds": train_cfg.max_time_s} if train_cfg.max_time_s else None,
        accelerator=train_cfg.accelerator,
        devices=train_cfg.devices,
        num_nodes=train_cfg.num_nodes,
        strategy=train_cfg.strategy,
        use_distributed_sampler=False,  # the DataModule shards by rank
        precision=train_cfg.precision,
        deterministic=True,
        logger=CSVLogger(out_dir, name="logs"),
        callbacks=callbacks,
        enable_progress_bar=train_cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=train_cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=train_cfg.val_every_n_epochs,
        limit_val_batches=1.0 if has_val else 0,
    )
    world = trainer.world_size
    if dm.cfg.batch_size % world:
        raise ValueError(
            f"batch_size {dm.cfg.batch_size} is the global batch: it must be divisible by "
            f"the world size {world} (devices x num_nodes)"
        )
    if optim_cfg.schedule == "cosine_time" and world > 1:
        # each process would read its own clock: learning rates, and so weights, would drift apart
        raise ValueError('schedule "cosine_time" is single-process only; use "cosine" (by steps) with DDP')
    resume = ckpt_dir / "last.ckpt"
    prev: dict[str, Any] = {}
    if resume.exists() and (out_dir / CONFIG_FILE).exists():
        prev = load_config(out_dir)  # a resumed run: its time and history carry over
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume if resume.exists() else None, weights_only=True)
    seconds = time.perf_counter() - t0 + float(prev.get("train_seconds", 0.0))
    best_val: dict[str, float] = {}
    history = list(prev.get("history", [])) + callbacks[0].rows
    best_path = ckpt_dir / "best.ckpt"
    if has_val and best_path.exists():
        state = torch.load(best_path, weights_only=True, map_location="cpu")["state_dict"]
        module.load_state_dict(state, strict=False)
        if history:
            best_val = max(history, key=lambda r: r.get("val/ndcg@10", -math.inf))
    model = module.model.eval()
    distributed = {
        "world_size": world,
        "num_nodes": trainer.num_nodes,
        "strategy": type(trainer.strategy).__name__,
        "global_batch_size": dm.cfg.batch_size,
        "per_process_batch_size": dm.cfg.batch_size // world,
    }
    config = _config_dict(
        kind=kind,
        model=model_cfg,
        data=dm.cfg,
        loss=loss_cfg,
        optim=optim_cfg,
        train=train_cfg,
        distributed=distributed,
        train_seconds=seconds,
        epochs=trainer.current_epoch,
        best_val=best_val,
        history=history,
        ranking={**ranking, "config": asdict(rank_cfg or RankingConfig())},
        run_size={"steps_per_epoch": size.steps_per_epoch, "total_steps": size.total_steps, "notes": size.notes},
        **(extra or {}),
    )
    if trainer.is_global_zero:
        save_model(model, out_dir, config)
    return TrainResult(
        out_dir,
        model,
        seconds,
        trainer.current_epoch,
        best_val,
        history,
        trainer.global_rank,
        world,
        ranking,
        size.notes,
    )


def _shallow(cfg: DataConfig) -> dict[str, Any]:
    """A config's fields as they are (`asdict` would turn its `codes` into a dict)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def _sync(model_cfg: PinRecConfig, data_cfg: DataConfig) -> DataConfig:
    return replace(
        data_cfg,
        max_len=model_cfg.max_len,
        offsets=model_cfg.offsets,
        outcome_conditioning=model_cfg.outcome_conditioning,
        codes=data_cfg.codes.for_model(model_cfg.outcomes, model_cfg.surfaces),
    )


def pretrain(
    data: PinRecDataModule | pd.DataFrame | str | Path,
    out_dir: str | Path,
    model_cfg: PinRecConfig | None = None,
    data_cfg: DataConfig | None = None,
    loss_cfg: LossConfig | None = None,
    optim_cfg: OptimConfig | None = None,
    train_cfg: TrainConfig | None = None,
    split: str = "none",
    rank_cfg: RankingConfig | None = None,
    catalogue: Catalogue | None = None,
) -> TrainResult:
    """Pretrain on engagement sequences from all surfaces.

    `data`: a contract frame, a contract parquet path, or a prepared `PinRecDataModule`.
    `split="leave_one_out"` validates on each user's second-to-last action (epoch selection).
    Resumes from `out_dir/lightning/last.ckpt` when it exists. A model with a ranking head
    (`model_cfg.rank_outcomes`) trains it on the frame's slates and masked actions
    (`training.ranking`); without impressions it trains the retrieval head only, and says so.
    `catalogue` (the vocabulary's, `events.catalogue`): item fields added to the item vectors.
    """
    data_cfg = data_cfg or DataConfig()
    if isinstance(data, (str, Path)):
        data = pd.read_parquet(data)
    dm = _as_datamodule(data, data_cfg, split)
    model_cfg = model_cfg or PinRecConfig(n_items=dm.n_items)
    if model_cfg.n_items != dm.n_items:
        model_cfg = replace(model_cfg, n_items=dm.n_items)
    if catalogue is not None:  # each field's values in code order, recorded with the model
        model_cfg = replace(model_cfg, catalogue=catalogue.field_values())
    if model_cfg.n_queries != 0:  # one search-table row per query of the training log
        model_cfg = replace(model_cfg, n_queries=dm.train_seqs.n_queries)
    dm = dm.with_config(**_shallow(_sync(model_cfg, dm.cfg)))
    dm, model_cfg, ranking = _with_ranking(dm, data, model_cfg, rank_cfg)
    optim_cfg = optim_cfg or OptimConfig()
    return _fit(
        dm,
        Path(out_dir),
        model_cfg,
        loss_cfg or LossConfig(),
        optim_cfg,
        train_cfg or TrainConfig(),
        "pretrain",
        rank_cfg=rank_cfg,
        ranking=ranking,
        co_impressions=co_impressions_for(data, dm.train_seqs.vocab, optim_cfg),
        exposure=exposure_for(data, dm.train_seqs.vocab, optim_cfg, model_cfg, dm.cfg.codes),
        events=data if isinstance(data, pd.DataFrame) else None,
        catalogue=catalogue,
    )


def _with_ranking(
    dm: PinRecDataModule, data: Any, model_cfg: PinRecConfig, rank_cfg: RankingConfig | None, surface: str | None = None
) -> tuple[PinRecDataModule, PinRecConfig, dict[str, Any]]:
    dm, model_cfg, ranking = prepare_ranking(
        dm, data if isinstance(data, pd.DataFrame) else None, model_cfg, rank_cfg, surface
    )
    if ranking.get("reason") and ranking["reason"] != "the model has no ranking head":
        log.info(json.dumps({"ranking": ranking["reason"]}))
    return dm, model_cfg, ranking


def fine_tune(
    data: pd.DataFrame | str | Path,
    surface: str,
    base_dir: str | Path,
    out_dir: str | Path,
    data_cfg: DataConfig | None = None,
    loss_cfg: LossConfig | None = None,
    optim_cfg: OptimConfig | None = None,
    train_cfg: TrainConfig | None = None,
    n_hard: int = 16,
    rank_cfg: RankingConfig | None = None,
) -> TrainResult:
    """Fine-tune a pretrained model (`base_dir`) on one surface.

    Inputs are the users' engagement sequences from all surfaces; only targets on `surface`
    count, and each target's session impressions that were not engaged are added as `n_hard`
    hard negatives. The vocabulary is the base model's (unknown items are dropped).
    """
    base_cfg = load_config(base_dir)
    model_cfg = PinRecConfig.from_dict(base_cfg["model"])
    base = load_model(base_dir)
    vocab = base.item_ids.numpy()
    data_cfg = _sync(model_cfg, replace(data_cfg or DataConfig(), target_surface=surface, n_hard=n_hard))
    if isinstance(data, (str, Path)):
        data = pd.read_parquet(data)
    queries = base.query_ids.numpy() if base.search_emb is not None else None  # the base model's search table
    seqs = build_sequences(data, vocab, hard_negatives=n_hard > 0, codes=data_cfg.codes, query_vocab=queries)
    dm = PinRecDataModule(seqs, data_cfg)
    dm, model_cfg, ranking = _with_ranking(dm, data, model_cfg, rank_cfg, surface)  # the surface's slates
    optim_cfg = optim_cfg or OptimConfig(lr=3e-4, warmup_steps=10)
    return _fit(
        dm,
        Path(out_dir),
        model_cfg,
        loss_cfg or LossConfig(),
        optim_cfg,
        train_cfg or TrainConfig(max_epochs=2),
        "fine_tune",
        init_state=base.state_dict(),
        extra={"surface": surface, "base_dir": str(base_dir)},
        rank_cfg=rank_cfg,
        ranking=ranking,
        co_impressions=co_impressions_for(data, vocab, optim_cfg),
        exposure=exposure_for(data, vocab, optim_cfg, model_cfg, data_cfg.codes),
    )


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _devices(value: str) -> int | str:
    """--devices: a count ("2", "-1" = all) or Lightning's "auto" / device list ("0,1")."""
    return int(value) if value.lstrip("-").isdigit() else value


def _add_scale_out_arguments(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group(
        "scale-out",
        "processes and devices (docs/training-scale-out.md); --batch-size is the global batch over all processes",
    )
    g.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto, ...")
    g.add_argument(
        "--devices",
        type=_devices,
        default=1,
        help="processes (cpu) or GPUs per node: a count, -1 (all), auto, or a list like 0,1",
    )
    g.add_argument("--num-nodes", type=int, default=1, help="machines (torchrun --nnodes, SLURM --nodes)")
    g.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ...")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the per-epoch JSON lines
    p = argparse.ArgumentParser(
        prog="python -m training.train", description="Pretrain or fine-tune PinRec on contract events (parquet)."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("pretrain", "fine-tune"):
        s = sub.add_parser(name, help=f"{name} a model; re-running with the same --out resumes")
        s.add_argument("--events", required=True, help="contract event table (parquet file or directory)")
        s.add_argument("--out", required=True, help="run directory (model.pt, config.json, logs/)")
        s.add_argument("--epochs", type=int, default=20 if name == "pretrain" else 2)
        s.add_argument("--max-time-s", type=float, default=None, help="wall-clock cap")
        s.add_argument("--batch-size", type=int, default=128)
        s.add_argument("--lr", type=float, default=1e-3 if name == "pretrain" else 3e-4)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--warmup-steps", type=int, default=100 if name == "pretrain" else 10)
        s.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
        s.add_argument("--no-progress-bar", action="store_true", help="plain per-epoch lines only (logs, CI)")
        s.add_argument(
            "--sampled", action="store_true", help="sampled softmax (in-batch + uniform negatives) instead of all items"
        )
        s.add_argument("--no-logq", action="store_true", help="switch off the logQ correction")
        _add_scale_out_arguments(s)
        if name == "pretrain":
            s.add_argument("--split", default="none", choices=["none", "leave_one_out"])
            s.add_argument("--d-model", type=int, default=128)
            s.add_argument("--layers", type=int, default=2)
            s.add_argument("--heads", type=int, default=2)
            s.add_argument("--max-len", type=int, default=200)
            s.add_argument("--dropout", type=float, default=0.2)
            s.add_argument("--uc", action="store_true", help="no outcome conditioning")
            s.add_argument("--single-token", action="store_true", help="only the 'next' offset")
            s.add_argument("--sasrec", action="store_true", help="SASRec-style baseline: every PinRec switch off")
        else:
            s.add_argument("--surface", required=True, help="surface to fine-tune on")
            s.add_argument("--base", required=True, help="pretrained run directory")
            s.add_argument("--hard", type=int, default=16, help="hard negatives per target")
    a = p.parse_args(argv)
    loss = LossConfig(full_softmax=not a.sampled, logq=not a.no_logq)
    train = TrainConfig(
        max_epochs=a.epochs,
        max_time_s=a.max_time_s,
        seed=a.seed,
        precision=a.precision,
        threads=a.threads,
        accelerator=a.accelerator,
        devices=a.devices,
        num_nodes=a.num_nodes,
        strategy=a.strategy,
        progress_bar=not a.no_progress_bar,
    )
    data = DataConfig(batch_size=a.batch_size, seed=a.seed)
    if a.cmd == "pretrain":
        sas = a.sasrec
        model = PinRecConfig(
            n_items=0,
            d_model=a.d_model,
            n_layers=a.layers,
            n_heads=a.heads,
            max_len=a.max_len,
            dropout=a.dropout,
            side_inputs=not sas,
            outcome_conditioning=not (a.uc or sas),
            multi_token=not (a.single_token or sas),
        )
        if sas:
            loss = replace(loss, logq=False)
        res = pretrain(
            a.events, a.out, model, data, loss, OptimConfig(lr=a.lr, warmup_steps=a.warmup_steps), train, split=a.split
        )
    else:
        res = fine_tune(
            a.events,
            a.surface,
            a.base,
            a.out,
            data,
            loss,
            OptimConfig(lr=a.lr, warmup_steps=a.warmup_steps),
            train,
            n_hard=a.hard,
        )
    if res.global_rank == 0:
        print(
            json.dumps(
                {
                    "out_dir": str(res.out_dir),
                    "epochs": res.epochs,
                    "train_seconds": round(res.train_seconds, 1),
                    "best_val": res.best_val,
                    "world_size": res.world_size,
                }
            )
        )


if __name__ == "__main__":
    main()
