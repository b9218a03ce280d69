"""What one lifecycle step hands the next, per surface and day, as small JSON files.

    {data_dir}/lifecycle/pretrained/{through}.json          a pretrained model trained through that day
    {data_dir}/lifecycle/{surface}/{day}/{step}.json        finetune, candidate, canary, promotion, ...

Each per-surface file holds one typed record (assets.records: `save` / `load`). The steps pass
them through files rather than Dagster IO managers because a step reads another day's record
too (the trial reads the previous day's release, the evaluation the fine-tuning's window) and the
files outlive the runs (the CLI's summary, the drift sensor read them).
"""

import json
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from assets.records import Record
from storage.files import atomic_write_text

R = TypeVar("R", bound=Record)


class LifecycleState:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, step: str, surface: str | None = None, day: date | None = None) -> Path:
        if surface is None:
            return self.root / f"{step}.json"
        return self.root / surface / day.isoformat() / f"{step}.json"

    def write(self, data: dict[str, Any], step: str, surface: str | None = None, day: date | None = None) -> Path:
        return atomic_write_text(self.path(step, surface, day), json.dumps(data, indent=2, sort_keys=True, default=str))

    def read(self, step: str, surface: str | None = None, day: date | None = None) -> dict[str, Any]:
        path = self.path(step, surface, day)
        if not path.exists():
            where = f" for {surface} on {day}" if surface else ""
            raise FileNotFoundError(f"no {step} result{where} ({path}): materialize the upstream asset first")
        return json.loads(path.read_text())

    def save(self, record: Record, surface: str, day: date) -> Path:
        """`record` as its step's file for `surface` and `day`."""
        return self.write(record.to_dict(), record.step, surface, day)

    def load(self, kind: type[R], surface: str, day: date) -> R:
        """The `kind` record of `surface` and `day` (FileNotFoundError naming the step when none)."""
        return kind.from_dict(self.read(kind.step, surface, day))

    def has(self, kind: type[Record], surface: str, day: date) -> bool:
        return self.path(kind.step, surface, day).exists()


class PretrainedModels:
    """Every pretrained model, by the last day it trained on. Fine-tuning for day D takes the
    newest one trained only on days before D, so no model sees the day it is evaluated on."""

    def __init__(self, state: LifecycleState):
        self.root = state.root / "pretrained"

    def record(self, path: str | Path, days: list[date], held_out: date | None) -> Path:
        through = max(days)
        return atomic_write_text(
            self.root / f"{through.isoformat()}.json",
            json.dumps(
                {
                    "path": str(path),
                    "days": [d.isoformat() for d in days],
                    "through": through.isoformat(),
                    "held_out": held_out.isoformat() if held_out else None,
                },
                indent=2,
                sort_keys=True,
            ),
        )

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*.json"))]

    def before(self, day: date) -> dict[str, Any] | None:
        """The newest pretrained model whose training days all lie before `day` (or None)."""
        eligible = [m for m in self.all() if date.fromisoformat(m["through"]) < day]
        return eligible[-1] if eligible else None


def lifecycle_state(lake) -> LifecycleState:
    """The lifecycle state beside the data lake (`{data_dir}/lifecycle`)."""
    return LifecycleState(Path(lake.root).parent / "lifecycle")
