"""Typed resources: where events come from, where the data lake is, the Feast store, and S3.

Defaults come from orchestration.config (the environment), so the embedded profile and a
production deployment differ only by environment variables. Credentials are never fields here:
S3 credentials come from the environment through boto3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from orchestration.config import Settings, load_settings


class EventSourceResource(ConfigurableResource):
    """The event source the ingestion reads (movielens-1m | movielens-100k | simulated | parquet)."""

    source: str
    cache_dir: str
    parquet_location: Optional[str] = None
    sim_seed: int = 7
    sim_users: int = 2000
    sim_items: int = 5000
    sim_events_per_day: int = 50_000
    start_date: str = "2026-01-01"  # the partition span: first day ...
    n_days: int = 30  # ... and its length (the simulated world's days; the parquet source's span)
    sim_drift_day: Optional[str] = None
    sim_drift_kind: str = "outcome_mix"

    _source: Any = PrivateAttr(default=None)

    def open(self, s3_client=None):
        """The source object (events.sources), built once per run."""
        if self._source is None:
            from datetime import date, timedelta

            from events.sources import make_source

            first = date.fromisoformat(self.start_date)
            span = [first + timedelta(days=i) for i in range(self.n_days)]
            sim_config = None
            if self.source == "simulated":
                from events.simulator import SimulatorConfig

                sim_config = SimulatorConfig(
                    seed=self.sim_seed,
                    n_users=self.sim_users,
                    n_items=self.sim_items,
                    events_per_day=self.sim_events_per_day,
                    start_date=first,
                    n_days=self.n_days,
                    drift_day=date.fromisoformat(self.sim_drift_day) if self.sim_drift_day else None,
                    drift_kind=self.sim_drift_kind,
                )
            self._source = make_source(
                self.source,
                cache_dir=Path(self.cache_dir),
                parquet_location=self.parquet_location,
                simulator_config=sim_config,
                s3_client=s3_client,
                days=span,
            )
        return self._source


class DataLakeResource(ConfigurableResource):
    """The local event table and quarantine (events.table.EventTable)."""

    root: str

    def table(self):
        from events.table import EventTable

        return EventTable(Path(self.root))


class FeastResource(ConfigurableResource):
    """The Feast feature store: registry, online store and offline tables under `data_dir`."""

    data_dir: str
    config_file: str

    _store: Any = PrivateAttr(default=None)

    def settings(self):
        from feature_pipeline.store import FeastSettings

        return FeastSettings(data_dir=Path(self.data_dir), config_file=Path(self.config_file))

    def store(self):
        """The FeatureStore (opened lazily: importing feast takes seconds)."""
        if self._store is None:
            from feature_pipeline.store import open_store

            self._store = open_store(self.settings())
        return self._store


class S3Resource(ConfigurableResource):
    """The artifact bucket. Endpoint, bucket and prefix are configuration; credentials come only
    from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or boto3's default chain."""

    endpoint_url: Optional[str] = None
    bucket: str = "pinrec"
    prefix: str = "pinrec-ops"

    _client: Any = PrivateAttr(default=None)

    def s3_settings(self):
        from dataclasses import replace

        from storage.s3 import S3Settings

        return replace(S3Settings.from_env(), endpoint_url=self.endpoint_url, bucket=self.bucket, prefix=self.prefix.strip("/"))

    def client(self):
        if self._client is None:
            from storage.s3 import ensure_bucket, make_client

            self._client = make_client(self.s3_settings())
            ensure_bucket(self._client, self.bucket)
        return self._client

    def uri(self, *parts: str) -> str:
        return self.s3_settings().uri(*parts)

    def registry(self):
        """The model/index version registry (serving.registry) in this bucket and prefix."""
        from serving.registry import Registry

        return Registry(self.s3_settings(), self.client())

    def key(self, *parts: str) -> str:
        return self.s3_settings().key(*parts)


class TrainingResource(ConfigurableResource):
    """Model size and training budget for pretraining and per-surface fine-tuning.

    Defaults fit the embedded default (a simulated world on 2 CPU cores in minutes); raise them
    for real data (environment: PINREC_TRAIN_D_MODEL, ..._PRETRAIN_EPOCHS, ...)."""

    d_model: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    batch_size: int = 128
    pretrain_epochs: int = 3
    finetune_epochs: int = 1
    finetune_days: int = 7
    hard_negatives: int = 16
    # Sampled softmax (in-batch + uniform negatives, logQ-corrected) costs the same whatever the
    # catalogue size; the full softmax over every item only pays off for small catalogues.
    sampled_softmax: bool = True
    seed: int = 0
    threads: int = 2
    models_dir: str = "models"

    def configs(self, n_items: int = 0):
        """(model, data, loss, train) configs of pretraining; fine-tuning overrides the epochs."""
        from training.data import DataConfig
        from training.loss import LossConfig
        from training.model import PinRecConfig
        from training.train import TrainConfig

        model = PinRecConfig(n_items=n_items, d_model=self.d_model, n_layers=self.layers,
                             n_heads=self.heads, max_len=self.max_len)
        data = DataConfig(max_len=self.max_len, batch_size=self.batch_size, seed=self.seed)
        loss = LossConfig(full_softmax=not self.sampled_softmax)
        train = TrainConfig(max_epochs=self.pretrain_epochs, seed=self.seed, threads=self.threads, progress_bar=False)
        return model, data, loss, train


def build_resources(settings: Settings | None = None) -> dict[str, ConfigurableResource]:
    import os

    s = settings or load_settings()
    return {
        "event_source": EventSourceResource(
            source=s.source,
            cache_dir=str(s.cache_dir),
            parquet_location=s.parquet_location,
            sim_seed=s.sim_seed,
            sim_users=s.sim_users,
            sim_items=s.sim_items,
            sim_events_per_day=s.sim_events_per_day,
            start_date=s.start_date.isoformat(),
            n_days=(s.end_date - s.start_date).days + 1,
            sim_drift_day=s.sim_drift_day.isoformat() if s.sim_drift_day else None,
            sim_drift_kind=s.sim_drift_kind,
        ),
        "lake": DataLakeResource(root=str(s.data_dir / "lake")),
        "training": TrainingResource(models_dir=str(s.data_dir / "models"), **s.train),
        "feast": FeastResource(data_dir=str(s.data_dir / "feast"), config_file=str(s.feast_config)),
        "s3": S3Resource(
            endpoint_url=os.environ.get("PINREC_S3_ENDPOINT_URL") or None,
            bucket=os.environ.get("PINREC_S3_BUCKET", "pinrec"),
            prefix=os.environ.get("PINREC_S3_PREFIX", "pinrec-ops"),
        ),
    }
