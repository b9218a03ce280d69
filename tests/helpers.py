"""Small builders shared by the tests."""

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

from events.ingest import validate_events
from events.table import EventTable
from world.simulator import SimulatedWorld, SimulatorConfig

# `pinrec-ops live` on a small world for four days (tests/conftest.py's live_loop): two warm-up
# days, a bootstrap retrain, two days served
LIVE_WORLD = {
    "PINREC_SIM_USERS": "400",
    "PINREC_SIM_ITEMS": "1000",
    "PINREC_SIM_EVENTS_PER_DAY": "15000",
    "PINREC_TRAIN_D_MODEL": "32",
    "PINREC_TRAIN_PRETRAIN_EPOCHS": "2",
    "PINREC_TRAIN_PRETRAIN_MIN_STEPS": "20",  # the plan's step budgets, sized down for tests
    "PINREC_TRAIN_FINETUNE_MIN_STEPS": "10",
    # the loop's tests are about mechanics (what a champion serves becomes the day's impressions):
    # a bootstrap model trained on two tiny days does not reliably beat the popularity and random
    # lists on the yardstick (homefeed 0.081 against random's 0.085, SE 0.01), so the bootstrap is
    # judged without that rule, as `mechanics_gate` does for the lifecycle's tests; the rule itself
    # is tested in tests/lifecycle/test_faults.py
    "PINREC_GATE_BASELINES": "0",
}
LIVE_DAYS = [date(2026, 1, d) for d in (1, 2, 3, 4)]

SMALL_WORLD = SimulatorConfig(
    seed=3, n_users=60, n_items=300, n_topics=6, events_per_day=3000, start_date=date(2026, 2, 1), n_days=4
)


def log_world(
    seed: int, start: date, n_days: int, events_per_day: int, n_users: int = 80, n_items: int = 200, n_topics: int = 4
) -> SimulatorConfig:
    """A small world whose example log (world.example_log) a test runs through the main command."""
    return SimulatorConfig(
        seed=seed,
        n_users=n_users,
        n_items=n_items,
        n_topics=n_topics,
        events_per_day=events_per_day,
        start_date=start,
        n_days=n_days,
    )


def log_options(location: str, vocabulary: Path) -> list[str]:
    """The main command's options that read an example log (world.example_log.write_example_log's
    location and vocabulary)."""
    return ["--source", "parquet", "--events", location, "--vocabulary", str(vocabulary)]


# Requests that both endpoints (/retrieve and /recommend, on a service serving homefeed from a
# built-in-vocabulary model) refuse: (case, body, status, what the error body names)
BAD_REQUESTS_OF_EVERY_ENDPOINT = [
    ("unknown surface", {"user_id": 1, "surface": "nowhere"}, 422, "unknown surface"),
    ("k zero", {"user_id": 1, "surface": "homefeed", "k": 0}, 422, "k"),
    ("k too large", {"user_id": 1, "surface": "homefeed", "k": 100000}, 422, "k"),
    (
        "unknown outcome weight",
        {"user_id": 1, "surface": "homefeed", "outcome_weights": {"like": 1}},
        422,
        "unknown outcome",
    ),
    ("all weights zero", {"user_id": 1, "surface": "homefeed", "outcome_weights": {"click": 0}}, 422, "> 0"),
    (
        "a negative outcome as a weight",
        {"user_id": 1, "surface": "homefeed", "outcome_weights": {"hide": 1}},
        422,
        "not engagements and cannot weight retrieval; allowed: ['click', 'save'",
    ),
    ("unknown field", {"user_id": 1, "surface": "homefeed", "kk": 3}, 422, "kk"),
    ("valid surface not served", {"user_id": 1, "surface": "related"}, 404, "not served"),
]


def ingest_world(root: Path, config: SimulatorConfig = SMALL_WORLD) -> EventTable:
    """Ingest every day of a simulated world into an event table under `root`."""
    world = SimulatedWorld(config)
    table = EventTable(root)
    for day in world.days():
        result = validate_events(world.day(day), day)
        assert len(result.quarantine) == 0
        table.write_day(day, result.good, result.quarantine)
    return table


def tiny_model(
    n_items: int = 300,
    seed: int = 0,
    d_model: int = 32,
    item_id_offset: int = 1000,
    rank_outcomes: tuple[str, ...] = (),
    n_queries: int = 0,
):
    """A deterministic random-weight PinRec whose item ids are ``item_id_offset + 1..V``
    (``rank_outcomes``: with a ranking head predicting them; ``n_queries``: a search table of
    queries 1..n_queries)."""
    from training.model import PinRec, PinRecConfig

    torch.manual_seed(seed)
    model = PinRec(
        PinRecConfig(
            n_items=n_items,
            d_model=d_model,
            n_layers=1,
            n_heads=2,
            max_len=50,
            dropout=0.0,
            rank_outcomes=tuple(rank_outcomes),
            n_queries=n_queries,
        )
    )
    with torch.no_grad():
        model.item_ids[1:] += item_id_offset - 0
    return model.eval()


# The training plan of the tests that run the main command: seconds, not minutes.
TINY_TRAINING_ENV = {
    "PINREC_TRAIN_D_MODEL": "16",
    "PINREC_TRAIN_LAYERS": "1",
    "PINREC_TRAIN_HEADS": "1",
    "PINREC_TRAIN_MAX_LEN": "16",
    "PINREC_TRAIN_PRETRAIN_EPOCHS": "1",
    "PINREC_TRAIN_FINETUNE_EPOCHS": "1",
    "PINREC_TRAIN_FINETUNE_DAYS": "3",
    "PINREC_TRAIN_BATCH_SIZE": "64",
}


# The training plan of the tests that run the lifecycle's jobs in process (TrainingResource.with_plan).
TINY_MODEL = {
    "d_model": 32,
    "layers": 1,
    "heads": 1,
    "max_len": 20,
    "pretrain_epochs": 2,
    "finetune_epochs": 1,
    "finetune_days": 3,
    "batch_size": 64,
    "pretrain_min_steps": 20,  # the plan's step budgets, sized down for tests
    "finetune_min_steps": 10,
}


def mechanics_gate(surfaces) -> dict:
    """Run config of a retrain whose test is about promotion mechanics, not model quality: the
    canary gate without the rule that the candidate beat the popularity policy on the yardstick
    (the tests' tiny models rarely do; the check records the override). The rule itself is tested
    in tests/lifecycle/test_faults.py."""
    return {"ops": {f"{s}__canary_evaluation_canary_gate": {"config": {"beat_baselines": False}} for s in surfaces}}


def cli_env(var: Path, env: dict[str, str] | None = None, training: dict[str, str] = TINY_TRAINING_ENV) -> dict:
    """The environment of `pinrec-ops` as an operator runs it: this machine's without its
    PINREC_/AWS_/DAGSTER_ settings, the `training` plan (default: the tiny one), `var` as the local
    state, the repository importable, then `env`."""
    from storage.paths import REPO_ROOT

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PINREC_", "AWS_", "DAGSTER_"))},
        **training,
        "PINREC_VAR_DIR": str(var),
        "PYTHONPATH": str(REPO_ROOT),
        **(env or {}),
    }


def pinrec_ops(
    var: Path,
    *args: str,
    env: dict[str, str] | None = None,
    training: dict[str, str] = TINY_TRAINING_ENV,
    timeout: int = 600,
) -> subprocess.CompletedProcess:
    """`pinrec-ops ARGS` as an operator runs it (piped), in `cli_env`; exit 0 asserted."""
    from storage.paths import REPO_ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        cwd=REPO_ROOT,
        env=cli_env(var, env, training),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
