"""Day partitions over the configured source's span (docs/design.md: one partition per UTC day)."""

from datetime import timedelta

import dagster as dg

from pinrec_ops.defs.config import SETTINGS

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date.isoformat(),
    end_date=(SETTINGS.end_date + timedelta(days=1)).isoformat(),  # exclusive
    timezone="UTC",
)
