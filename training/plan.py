"""What the lifecycle trains: one plan for pretraining and per-surface fine-tuning.

The library's config dataclasses (`PinRecConfig`, `DataConfig`, `LossConfig`, `TrainConfig`)
hold the defaults of a full-size model; the lifecycle's embedded default is smaller so that a
simulated world trains in minutes on 2 CPU cores. This dataclass is the single place those sizes
and budgets are set: the Dagster `TrainingResource` takes its defaults from here and
`configs()` turns a plan into the library's configs.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields, replace

from events.contract import BUILTIN_CODES, EventCodes
from training.data import DataConfig
from training.loss import LossConfig
from training.model import PinRecConfig
from training.module import OptimConfig
from training.ranking import RankingConfig, rank_outcomes_for
from training.train import TrainConfig


@dataclass(frozen=True)
class TrainingPlan:
    d_model: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    batch_size: int = 32  # a week of the embedded world: ~55 optimiser steps an epoch
    pretrain_epochs: int = 3
    finetune_epochs: int = 1
    # Sized in optimiser steps (training.steps): a week of the embedded world is ~55 batches an
    # epoch, so the epochs above are raised until a run has at least this many steps, and the
    # warm-up is at most `warmup_fraction` of the run, with a cosine decay over the rest.
    # Pretraining's budget, measured in the paired harness (benchmarks/policy_loop.py, pinrec
    # saves per 1,000 served slots, random 8.36): 150 steps 9.81, 600 steps 10.88, 1,200 10.41.
    pretrain_min_steps: int = 600
    finetune_min_steps: int = 60
    # Fine-tuning's budget: a day of 10^6 events gives ~580 steps a surface (1 epoch of the days
    # before), a minute each on this machine in the nightly refresh (benchmarks/nightly_refresh.py);
    # past the budget the run reads a shuffled sample. A week of the embedded world is ~55 steps an
    # epoch: unaffected. (Fine-tuning is within noise of the pretrained model in the paired harness.)
    finetune_max_steps: int = 200
    warmup_fraction: float = 0.1  # of the run's steps at most
    lr: float = 1e-3
    finetune_lr: float = 3e-4
    # What items are, from the whole log (training.cooccurrence): the item table starts from the
    # sessions' co-impressions and keeps a contrastive objective over items shown together.
    seed_items: bool = True
    co_impression_weight: float = 0.3
    seed_norm: float = 1.0  # the seeded item rows' norm (0: the initial table's): item identity leads the token
    # Exposure (training.model.PinRecConfig.exposure_bias): a per-item bias learned in training and
    # dropped when serving, so the service ranks by P(engage | shown), not by how often an item is shown.
    exposure_bias: bool = True
    # ... learned with the engagement loss (False, as from 2026-12-05), which also takes each
    # item's general appeal away from serving; True: taken from the log's impressions and fixed
    # while training (training.exposure). Measured in the paired harness (pinrec saves / clicks
    # per 1,000 served slots, fused AdamW): learned 11.01 / 24.58 and 10.93 / 24.20 (seeds 0, 1)
    # against 10.76 / 23.71 and 10.76 / 23.53 from impressions.
    exposure_from_impressions: bool = False
    # the search query conditions the head (training.queries): one learned row per query of the log
    search_queries: bool = True
    query_dropout: float = 0.5  # share of targets trained without their query (DataConfig.query_dropout)
    # the head's outcome and offset terms added to the unit-normalised hidden state
    # (PinRecConfig.unit_trunk). Measured in the harness: it lets outcome conditioning trade (save1
    # vs save0: -0.62 clicks, +0.04 saves) but pinrec served 10.43 saves against 10.81 without: off.
    unit_trunk: bool = False
    finetune_days: int = 7  # fine-tuning reads the surface's targets of the days before
    hard_negatives: int = 16  # impressed-but-not-engaged items per target (fine-tuning)
    # Sampled softmax (in-batch + uniform negatives, logQ-corrected) costs the same whatever the
    # catalogue size; the full softmax over every item only pays off for small catalogues.
    sampled_softmax: bool = True
    # UniPinRec: one model retrieves and ranks. The ranking head trains on the log's slates
    # (sessions with impressions) beside the retrieval head; a log without impressions trains
    # the retrieval head only (training.ranking).
    ranking: bool = True
    rank_weight: float = 1.0  # ranking loss weight in the sum with the retrieval loss
    seed: int = 0
    threads: int = 2

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict:
        return asdict(self)

    def configs(
        self, n_items: int = 0, codes: EventCodes = BUILTIN_CODES
    ) -> tuple[PinRecConfig, DataConfig, LossConfig, TrainConfig]:
        """(model, data, loss, train) configs of pretraining; fine-tuning overrides the epochs.
        `codes`: the vocabulary's (`events.vocabulary.Vocabulary.codes`; default the built-in
        data's): the model's outcome and surface tables and what the data counts as engaged."""
        model = PinRecConfig(
            n_items=n_items,
            d_model=self.d_model,
            n_layers=self.layers,
            n_heads=self.heads,
            max_len=self.max_len,
            outcomes=codes.outcomes,
            surfaces=codes.surfaces,
            rank_outcomes=rank_outcomes_for(codes) if self.ranking else (),
            exposure_bias=self.exposure_bias,
            n_queries=-1 if self.search_queries else 0,  # -1: pretraining counts the log's queries
            unit_trunk=self.unit_trunk,
        )
        data = DataConfig(
            max_len=self.max_len,
            batch_size=self.batch_size,
            seed=self.seed,
            codes=codes,
            query_dropout=self.query_dropout,
        )
        loss = LossConfig(full_softmax=not self.sampled_softmax)
        train = TrainConfig(
            max_epochs=self.pretrain_epochs,
            seed=self.seed,
            threads=self.threads,
            progress_bar=sys.stderr.isatty(),  # a bar in a terminal, none in a log file
            log_every_n_steps=1,
            min_steps=self.pretrain_min_steps,
        )
        return model, data, loss, train

    def finetune_train_config(self, train: TrainConfig) -> TrainConfig:
        """Fine-tuning's epochs and minimum steps on pretraining's `train` config."""
        return replace(
            train, max_epochs=self.finetune_epochs, min_steps=self.finetune_min_steps, max_steps=self.finetune_max_steps
        )

    def optim_config(self, stage: str) -> OptimConfig:
        """The optimiser of "pretrain" or "finetune": learning rate, a warm-up of `warmup_fraction`
        of the run then cosine decay, the co-impression objective (pretraining also seeds the item
        table; fine-tuning starts from the pretrained one)."""
        if stage not in ("pretrain", "finetune"):
            raise ValueError(f'stage must be "pretrain" or "finetune", got {stage!r}')
        pre = stage == "pretrain"
        return OptimConfig(
            lr=self.lr if pre else self.finetune_lr,
            warmup_steps=100 if pre else 10,  # at most warmup_fraction of the run (training.steps)
            max_warmup_fraction=self.warmup_fraction,
            schedule="cosine",
            co_weight=self.co_impression_weight,
            seed_items=self.seed_items and pre,
            seed_norm=self.seed_norm,
            exposure_from_impressions=self.exposure_from_impressions,
        )

    def ranking_config(self) -> RankingConfig:
        """The ranking head's training (weights, slates per window) of pretraining and fine-tuning."""
        return RankingConfig(weight=self.rank_weight)
