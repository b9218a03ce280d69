"""The simulated world as an event source: the seeded world's days (open loop), or the days a
closed loop has played against what the system served (`world_dir`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from events.sources import describe_days, read_parquet_file
from world.simulator import SimulatedWorld, SimulatorConfig


class SimulatedSource:
    """The seeded multi-surface world of `world.simulator`.

    Open loop (default): day D is generated from the world's config, for the days its clock has
    produced (`n_days` from its start). Closed loop (`world_dir` set): the world has already
    played day D against what the system served (`world.closed_loop`, driven by
    `pinrec-ops live`) and left the day's events and serving log under
    `world_dir/date=D/`; the clock is the newest day there."""

    name = "simulated"
    EVENTS_FILE = "events.parquet"
    SERVING_LOG_FILE = "serving_log.parquet"

    def __init__(self, config=None, world_dir: str | Path | None = None):
        self.world = SimulatedWorld(config or SimulatorConfig())
        self.world_dir = Path(world_dir) if world_dir else None

    def day_dir(self, day: date) -> Path:
        if self.world_dir is None:
            raise ValueError("an open-loop simulated world keeps no day folders")
        return self.world_dir / f"date={day.isoformat()}"

    def days(self) -> list[date]:
        if self.world_dir is None:
            return self.world.days()
        return sorted(
            date.fromisoformat(p.parent.name.removeprefix("date="))
            for p in self.world_dir.glob(f"date=*/{self.EVENTS_FILE}")
        )

    def has_day(self, day: date) -> bool:
        """The world's clock: it has produced the days of its config (open loop), or the days it
        has played (closed loop)."""
        if self.world_dir is not None:
            return (self.day_dir(day) / self.EVENTS_FILE).exists()
        days = self.world.days()
        return days[0] <= day <= days[-1]

    def read_day(self, day: date) -> pd.DataFrame:
        if self.world_dir is not None:
            if not self.has_day(day):
                raise ValueError(
                    f"the closed-loop world has not played {day} yet (days under {self.world_dir}: "
                    f"{describe_days(self.days())})"
                )
            return read_parquet_file(self.day_dir(day) / self.EVENTS_FILE, str(self.day_dir(day) / self.EVENTS_FILE))
        if day not in set(self.world.days()):
            raise ValueError(
                f"the simulated world has no day {day}; it spans {self.world.days()[0]}..{self.world.days()[-1]}"
            )
        return self.world.day(day)

    def serving_log(self, day: date) -> pd.DataFrame | None:
        """What the system served on `day` and what users did with it (closed loop), else None."""
        if self.world_dir is None:
            return None
        path = self.day_dir(day) / self.SERVING_LOG_FILE
        return pd.read_parquet(path) if path.exists() else None
