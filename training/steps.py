"""A run sized in optimiser steps, not epochs.

A week of a small world is ~15 batches an epoch: three epochs are 45 steps, all inside a 100-step
warm-up, and the learning rate never reaches its value. `size_run` turns (steps per epoch, the
epochs asked for, a minimum step budget, the warm-up asked for) into the run that happens:

    epochs   = max(epochs asked, ceil(min_steps / steps per epoch))
    total    = epochs * steps per epoch, or at most `max_steps` (a budget: the run stops
               there, part-way through a shuffled epoch; 0 = no budget)
    warm-up  = min(warm-up asked, max(1, floor(max_warmup_fraction * total)))
               (max_warmup_fraction None: as asked, with a note when longer than the run)

and says, in one line each, what it changed (`RunSize.notes`; the trainer prints and logs them
and keeps them in config.json). A run with no step at all is refused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

log = logging.getLogger("training.steps")


@dataclass(frozen=True)
class RunSize:
    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    notes: list[str] = field(default_factory=list)


def size_run(
    steps_per_epoch: int,
    epochs: int,
    warmup_steps: int,
    min_steps: int = 0,
    max_warmup_fraction: float | None = None,
    max_steps: int = 0,
) -> RunSize:
    """The epochs and warm-up of a run of `steps_per_epoch` batches (see the module docstring)."""
    if steps_per_epoch <= 0:
        raise ValueError("no training batch: the data has no window with an input and a target")
    if epochs <= 0:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if max_warmup_fraction is not None and not 0 < max_warmup_fraction <= 1:
        raise ValueError(f"max_warmup_fraction must be in (0, 1], got {max_warmup_fraction}")
    if max_steps < 0 or (max_steps and max_steps < min_steps):
        raise ValueError(f"max_steps must be 0 (no budget) or at least min_steps ({min_steps}), got {max_steps}")
    notes = []
    run_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    if run_epochs != epochs:
        notes.append(
            f"{epochs} epochs of {steps_per_epoch} steps are {epochs * steps_per_epoch} steps, under the minimum "
            f"{min_steps}: training {run_epochs} epochs ({run_epochs * steps_per_epoch} steps)"
        )
    total = run_epochs * steps_per_epoch
    if max_steps and total > max_steps:
        notes.append(
            f"{run_epochs} epochs of {steps_per_epoch} steps are {total} steps, over the budget of {max_steps}: "
            f"training {max_steps} steps (a shuffled sample of the data)"
        )
        run_epochs, total = math.ceil(max_steps / steps_per_epoch), max_steps
    if max_warmup_fraction is None:  # kept as asked; a warm-up longer than the run is said
        warm = warmup_steps
        if warm > total:
            notes.append(
                f"warm-up of {warm} steps is longer than the run's {total} steps: the learning rate never "
                "reaches its value (set max_warmup_fraction to rescale it)"
            )
    else:
        warm = min(warmup_steps, max(1, math.floor(max_warmup_fraction * total)))
    if warm != warmup_steps:
        notes.append(
            f"warm-up of {warmup_steps} steps rescaled to {warm} ({max_warmup_fraction:.0%} at most of the "
            f"run's {total} steps)"
        )
    for note in notes:
        log.debug(note)  # the caller says it once (training.train prints it as a JSON line)
    return RunSize(run_epochs, steps_per_epoch, total, warm, notes)


__all__ = ["RunSize", "size_run"]
