"""What the lifecycle trains: one plan for pretraining and per-surface fine-tuning.

The library's config dataclasses (`PinRecConfig`, `DataConfig`, `LossConfig`, `TrainConfig`)
hold the defaults of a full-size model; the lifecycle's embedded default is smaller so that a
simulated world trains in minutes on 2 CPU cores. This dataclass is the single place those sizes
and budgets are set: the Dagster `TrainingResource` takes its defaults from here and
`configs()` turns a plan into the library's configs.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields

from events.contract import BUILTIN_CODES, EventCodes
from training.data import DataConfig
from training.loss import LossConfig
from training.model import PinRecConfig
from training.ranking import RankingConfig, rank_outcomes_for
from training.train import TrainConfig


@dataclass(frozen=True)
class TrainingPlan:
    d_model: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    batch_size: int = 128
    pretrain_epochs: int = 3
    finetune_epochs: int = 1
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
        )
        data = DataConfig(max_len=self.max_len, batch_size=self.batch_size, seed=self.seed, codes=codes)
        loss = LossConfig(full_softmax=not self.sampled_softmax)
        train = TrainConfig(
            max_epochs=self.pretrain_epochs,
            seed=self.seed,
            threads=self.threads,
            progress_bar=sys.stderr.isatty(),  # a bar in a terminal, none in a log file
            log_every_n_steps=1,
        )
        return model, data, loss, train

    def ranking_config(self) -> RankingConfig:
        """The ranking head's training (weights, slates per window) of pretraining and fine-tuning."""
        return RankingConfig(weight=self.rank_weight)
