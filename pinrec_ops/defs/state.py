"""What one lifecycle step hands the next, per surface and day, as small JSON files.

    {data_dir}/lifecycle/pretrained.json                    the current pretrained model
    {data_dir}/lifecycle/{surface}/{day}/{step}.json        finetune, candidate, canary, promotion

Partitioned steps pass results through these files rather than Dagster IO managers, because a
single-run backfill covers many partitions in one step.
"""

import json
from datetime import date
from pathlib import Path
from typing import Any

from storage.files import atomic_write_text


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


def lifecycle_state(lake) -> LifecycleState:
    """The lifecycle state beside the data lake (`{data_dir}/lifecycle`)."""
    return LifecycleState(Path(lake.root).parent / "lifecycle")
