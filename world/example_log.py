"""An event log of someone else's kind, made from the simulated world: for trying the parquet
source with a vocabulary of your own (README, "Your own data") and for the tests of it.

Two kinds, each written with its vocabulary file:

- ``shop``: surfaces ``web`` (the world's homefeed) and ``app`` (its search and related), outcomes
  ``view`` (impressions), ``cart`` (clicks) and ``purchase`` (saves); no hides (dropped).
- ``store``: one surface ``store``, outcomes ``purchase`` (clicks) and ``purchase_discounted``
  (saves); no impressions and no hides (dropped): a purchase log.

Layouts: ``pattern`` writes ``events/date=YYYY-MM-DD/events.parquet`` (read with the pattern
``.../date={date}/events.parquet``), ``folder`` writes a folder of parquet files of two days each.

    python -m world.example_log --out var/example-log --kind shop --days 8
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd

from events.contract import EVENT_KEY
from events.sources import write_parquet
from world.simulator import SimulatedWorld, SimulatorConfig

KINDS = {
    "shop": {
        "surfaces": {"homefeed": "web", "search": "app", "related": "app"},
        "outcomes": {"impression": "view", "click": "cart", "save": "purchase"},
        "vocabulary": "# A shop's log: web and app, impressions (views), carts and purchases; no hides.\n"
        "surfaces: [web, app]\noutcomes: [view, cart, purchase]\nengaged: [cart, purchase]\n"
        "impression: view\nweights: {cart: 1, purchase: 1}\n",
    },
    "store": {
        "surfaces": {"homefeed": "store", "search": "store", "related": "store"},
        "outcomes": {"click": "purchase", "save": "purchase_discounted"},
        "vocabulary": "# A store's purchase log: one surface, no impressions, no negatives.\n"
        "surfaces: [store]\noutcomes: [purchase, purchase_discounted]\n"
        "engaged: [purchase, purchase_discounted]\n",
    },
}


def renamed_day(world: SimulatedWorld, day: date, kind: str) -> pd.DataFrame:
    """One simulated day in the kind's names; rows of outcomes the kind has no name for dropped."""
    spec = KINDS[kind]
    df = world.day(day)
    df = df[df["outcome"].isin(list(spec["outcomes"]))].copy()
    df["surface"] = df["surface"].map(spec["surfaces"])
    df["outcome"] = df["outcome"].map(spec["outcomes"])
    return df.drop_duplicates(list(EVENT_KEY)).reset_index(drop=True)


def write_example_log(
    out: Path,
    kind: str = "shop",
    config: SimulatorConfig | None = None,
    layout: str = "pattern",
    extra_rows: dict[date, list[dict]] | None = None,
) -> tuple[str, Path]:
    """Write the log and its vocabulary under `out`; returns (the log's location for --events,
    the vocabulary file). `extra_rows`: rows appended to a day as they are (e.g. values outside
    the vocabulary, which ingestion quarantines)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    if layout not in ("pattern", "folder"):
        raise ValueError(f"unknown layout {layout!r}; choose pattern or folder")
    out = Path(out)
    world = SimulatedWorld(config or replace(SimulatorConfig(), n_users=2000, n_items=5000, events_per_day=50_000))
    days = world.days()
    frames = {}
    for day in days:
        df = renamed_day(world, day, kind)
        if extra_rows and extra_rows.get(day):
            df = pd.concat([df, pd.DataFrame(extra_rows[day])], ignore_index=True)
        frames[day] = df
    if layout == "pattern":
        for day, df in frames.items():
            write_parquet(df, out / "events" / f"date={day.isoformat()}" / "events.parquet")
        location = str(out / "events" / "date={date}" / "events.parquet")
    else:
        for i in range(0, len(days), 2):
            part = pd.concat([frames[d] for d in days[i : i + 2]], ignore_index=True)
            write_parquet(part, out / "events" / f"part-{i // 2:05d}.parquet")
        location = str(out / "events")
    vocabulary = out / f"{kind}.yaml"
    vocabulary.parent.mkdir(parents=True, exist_ok=True)
    vocabulary.write_text(KINDS[kind]["vocabulary"])
    return location, vocabulary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m world.example_log", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, help="folder for the log and its vocabulary file")
    p.add_argument("--kind", choices=sorted(KINDS), default="shop")
    p.add_argument("--layout", choices=("pattern", "folder"), default="pattern")
    p.add_argument("--days", type=int, default=8, help="days of the simulated world (default 8)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--events-per-day", type=int, default=50_000)
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1))
    a = p.parse_args(argv)
    config = replace(
        SimulatorConfig(),
        n_users=a.users,
        n_items=a.items,
        events_per_day=a.events_per_day,
        n_days=a.days,
        start_date=a.start,
    )
    location, vocabulary = write_example_log(Path(a.out), a.kind, config, a.layout)
    print(
        f"log: {location}\nvocabulary: {vocabulary}\n"
        f"run: ./scripts/main.sh --source parquet --events '{location}' --vocabulary {vocabulary} --days {a.days - 1}"
    )


if __name__ == "__main__":
    main()
