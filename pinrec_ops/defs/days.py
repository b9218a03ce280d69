"""The days a run covers: one partition, or a partition range in a single-run backfill."""

from datetime import date, timedelta

from dagster import TimeWindow


def days_in_window(window: TimeWindow) -> list[date]:
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=i) for i in range((end - first).days)]


def partition_day(context) -> date:
    """The day a per-surface step computes: the run's partition (the last day of a range)."""
    return days_in_window(context.partition_time_window)[-1]
