"""Day partitions (UTC) from the source's first day, rolling forward with the wall clock: the
newest partition is the day that ended last. Whether a day's data has arrived is the source's
to say (the schedules ask it); a partition whose data has not arrived is simply missing."""

import dagster as dg

from assets.config import SETTINGS

daily_partitions = dg.DailyPartitionsDefinition(start_date=SETTINGS.start_date.isoformat(), timezone="UTC")
