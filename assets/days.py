"""The days a run covers: one partition, or a partition range in a single-run backfill."""

from datetime import date, timedelta

from dagster import AssetExecutionContext


def days_of_run(context: AssetExecutionContext) -> list[date]:
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=i) for i in range((end - first).days)]
