"""What the main command reports when its days are done: the ingested days, an online lookup of
one user's features, and per surface the champion and the canary's figures (also written to
<data dir>/summary.json)."""

from __future__ import annotations

import json
from datetime import date


def print_lookup(settings, user_id: int | None) -> None:
    import pandas as pd

    from feature_pipeline.store import FeastSettings, online_user_sequences, open_store

    feast = FeastSettings(data_dir=settings.data_dir / "feast", config_file=settings.feast_config)
    if not (feast.data_dir / "registry.db").exists():
        print(
            f"no online features under {feast.data_dir} yet: run `pinrec-ops lifecycle --source "
            f"{settings.source}` first"
        )
        return
    store = open_store(feast)
    if user_id is None:
        files = sorted((feast.data_dir / "offline" / "user_sequence").glob("*.parquet"))
        if not files:
            print("no user features yet: run the lifecycle first")
            return
        latest = pd.read_parquet(files[-1])
        user_id = int(latest.sort_values("seq_length").iloc[-1]["user_id"])
    row = online_user_sequences(store, [user_id]).iloc[0]
    if row["seq_item_ids"] is None:
        print(f"user {user_id}: not in the online store")
        return
    items = list(row["seq_item_ids"])
    titles = {}
    items_file = settings.cache_dir / settings.source / "items.parquet"
    if items_file.exists():
        titles = dict(pd.read_parquet(items_file).itertuples(index=False, name=None))
    print(f"online lookup (Feast {store.config.online_store.type} store) for user {user_id}:")
    print(f"  sequence length: {int(row['seq_length'])}")
    print("  last items (newest last):")
    for item, outcome, ts in list(zip(items, row["seq_outcomes"], row["seq_timestamps_us"]))[-5:]:
        when = pd.Timestamp(ts, unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M")
        name = settings.vocabulary.codes.outcomes[outcome]
        print(f"    {when}  {name:<9} item {item:>6}  {titles.get(item, '')}")


def lifecycle_summary(settings, day: date, registry) -> dict:
    """Per surface: the champion version after the day, the verdict (passed / failed and its
    reasons) and the yardstick (the gate's offline measure, `yardstick`) of the champion, the
    candidate, the previous champion, the popularity policy, (where the log has an exploration
    share) the random policy and (where the vocabulary allows repeats) the buy-again policy on
    the held-out day's users; recall@100 beside it (`surface_summary`). Also written to
    var/<source>/summary.json by the main command."""
    from assets.records import CanaryRecord
    from assets.state import LifecycleState

    state = LifecycleState(settings.data_dir / "lifecycle")
    surfaces = {}
    for surface in settings.surfaces:
        champion = registry.champion(surface)
        try:
            canary = state.load(CanaryRecord, surface, day)
        except FileNotFoundError:
            surfaces[surface] = {"champion": champion, "day": day.isoformat(), "note": f"no canary for {day}"}
            continue
        surfaces[surface] = surface_summary(canary, champion, day)
    return {
        "source": settings.source,
        "day": day.isoformat(),
        "vocabulary": settings.vocabulary.label,
        "surfaces": surfaces,
    }


def surface_summary(canary, champion: str | None, day: date) -> dict:
    """One surface's entry of the summary from its canary record (`assets.records.CanaryRecord`)
    and the champion after the day. The buy-again figures are there only when the canary
    measured them (a vocabulary with repeats)."""
    from serving.evaluation.buy_again import BUY_AGAIN

    metrics, baselines, name = canary.metrics, canary.baselines, canary.yardstick
    by_role = {**metrics, **baselines}
    figure = {role: values.get(name) for role, values in by_role.items()}
    # the champion after the day: the candidate when promoted, else the one it was judged against
    now = "candidate" if champion == canary.candidate else "champion" if champion == canary.champion else None
    yardstick = {
        "name": name,
        "champion": figure.get(now),
        "candidate": figure.get("candidate"),
        "previous_champion": figure.get("champion"),
        "popularity": figure.get("popularity"),
        "random": figure.get("random"),
    }
    entry = {
        "champion": champion,
        "day": day.isoformat(),
        "candidate": canary.candidate,
        "yardstick": yardstick,
        "recall@100": metrics.get("candidate", {}).get("recall@100"),
        "previous_champion_recall@100": metrics.get("champion", {}).get("recall@100"),
        "popularity_recall@100": baselines.get("popularity", {}).get("recall@100"),
        "outcomes_measured": canary.outcomes,
        "canary": "passed" if canary.passed else "failed",
        "promoted": champion == canary.candidate,
        "reasons": canary.reasons,
    }
    if BUY_AGAIN in baselines:  # a vocabulary with repeats: reported beside popularity
        yardstick[BUY_AGAIN] = figure.get(BUY_AGAIN)
        entry[f"{BUY_AGAIN}_recall@100"] = baselines[BUY_AGAIN].get("recall@100")
    return entry


def print_summary(summary: dict) -> None:
    from serving.evaluation.buy_again import BUY_AGAIN

    def figure(value) -> str:
        return f"{value:>10.4f}" if value is not None else f"{'-':>10}"

    names = {e["yardstick"]["name"] for e in summary["surfaces"].values() if "yardstick" in e}
    again = any(BUY_AGAIN in e.get("yardstick", {}) for e in summary["surfaces"].values())
    roles = ["champion", "candidate", "popularity", "random", *([BUY_AGAIN] if again else [])]
    print(f"\nyardstick: {', '.join(sorted(names)) or '-'} (the gate's offline measure; higher is better)")
    header = " ".join(f"{role.replace('_', ' '):>10}" for role in roles)
    print(f"{'surface':<10} {'champion version':<28} {header} {'canary':<8} note")
    for surface, e in summary["surfaces"].items():
        if "canary" not in e:
            dashes = " ".join(f"{'-':>10}" for _ in roles)
            print(f"{surface:<10} {str(e['champion']):<28} {dashes} {'-':<8} {e.get('note', '')}")
            continue
        y = e["yardstick"]
        if e["reasons"]:
            note = "not promoted: " + "; ".join(e["reasons"])
        else:
            note = "bootstrapped" if y["previous_champion"] is None and e["promoted"] else ""
        figures = " ".join(figure(y.get(role)) for role in roles)
        print(f"{surface:<10} {str(e['champion']):<28} {figures} {e['canary']:<8} {note}")


def report(settings, start: date, end: date, s3, *, data_only: bool) -> None:
    from events.table import EventTable
    from serving.service.checks import checked_registry
    from storage.files import atomic_write_text
    from storage.s3 import list_keys, make_client

    client = make_client(s3.settings())
    archived = list_keys(client, s3.bucket, s3.settings().key("data"))
    table = EventTable(settings.data_dir / "lake")
    ingested = [d for d in table.days() if start <= d <= end]
    good = sum(table.row_count(table.events_path(d)) for d in ingested)
    bad = sum(table.row_count(table.quarantine_path(d)) for d in ingested)
    print(
        f"\ningested {len(ingested)} day partitions: {good} events, {bad} quarantined; {len(archived)} objects "
        "archived to S3"
    )
    print_lookup(settings, None)
    if not data_only:
        summary = lifecycle_summary(settings, end, checked_registry(s3.settings(), client))
        print_summary(summary)
        path = atomic_write_text(settings.data_dir / "summary.json", json.dumps(summary, indent=2, default=str))
        print(f"summary: {path}")
