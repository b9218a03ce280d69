"""Day partitions (UTC) from the source's first day, rolling forward with the wall clock: the
newest partition is the day that ended last. Whether a day's data has arrived is the source's
to say (the schedules ask it); a partition whose data has not arrived is simply missing."""

import functools
from datetime import date

import dagster as dg


@functools.cache
def daily_partitions(start_date: date) -> dg.DailyPartitionsDefinition:
    """The day partitions from `start_date` (the settings' first day); one object per first day, so
    every asset of a graph shares it."""
    return dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC")
