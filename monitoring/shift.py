"""One shift, one retrain: which days the drift sensor judges a surface's newest day against.

Before any shift, a surface's newest day is judged against its champion's training window (the
manifest's data partitions). When a day drifts from that reference, a retrain is requested and the
day is remembered as the surface's *shift start*. From then on the newest day is judged against
the shift's own days (the days from the shift start up to the day before the newest, at most as
many days as the champion's training window), not against the champion's window: a retrain
fine-tunes on the days before its partition, so the champions that follow a shift are trained on
mostly pre-shift days for a while, and judging against their windows would request a retrain
every day until the window has rolled past the shift (four drift retrains in four days in the
12-day loop of issue 27). The same shift, persisting, then looks like its own reference and
requests nothing more; a second, different shift moves away from the first shift's days and fires
again (and becomes the new shift start). Once the champion's whole training window lies on or
after the shift start, the champion's window is the reference again and the shift is forgotten.

The trailing references of the online signals (engagements per served impression, recall) are cut
at the shift start the same way (`since_shift`): a drop against pre-shift days is the shift
already answered.

The rule is pure (dates in, dates out); the sensor keeps `ShiftMemory` per surface in its cursor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class ShiftMemory:
    """What the drift sensor remembers of one surface between evaluations."""

    shift_start: date | None = None  # the first day of the last shift a retrain was requested for

    def to_cursor(self) -> str | None:
        return self.shift_start.isoformat() if self.shift_start else None

    @classmethod
    def from_cursor(cls, value: str | None) -> ShiftMemory:
        return cls(date.fromisoformat(value) if value else None)


def settled(memory: ShiftMemory, training_days: Sequence[date]) -> ShiftMemory:
    """The memory once the champion's training window lies wholly on or after the shift start:
    the champion has learned from the shift's days only, so its window is the reference again."""
    if memory.shift_start is not None and training_days and min(training_days) >= memory.shift_start:
        return ShiftMemory()
    return memory


def reference_days(
    training_days: Sequence[date], available_days: Iterable[date], newest: date, memory: ShiftMemory
) -> list[date]:
    """The days `newest` is judged against: the champion's training window, or after a shift the
    shift's own days before `newest` (the newest of them, at most as many as the window has days;
    empty on the shift's first day, when there is nothing of it yet to judge against)."""
    memory = settled(memory, training_days)
    if memory.shift_start is None:
        return sorted(training_days)
    own = sorted(d for d in available_days if memory.shift_start <= d < newest)
    return own[-max(len(training_days), 1) :]


def since_shift(days: Iterable[date], memory: ShiftMemory) -> list[date]:
    """`days` (a trailing reference of an online signal) without those before the shift start."""
    return [d for d in days if memory.shift_start is None or d >= memory.shift_start]


def after_judgement(memory: ShiftMemory, training_days: Sequence[date], newest: date, drifted: bool) -> ShiftMemory:
    """The memory after `newest` was judged: a drifted day starts a shift (and its retrain is
    requested); otherwise the memory stays, settled if the champion has caught up."""
    return ShiftMemory(newest) if drifted else settled(memory, training_days)
