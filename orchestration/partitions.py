"""Day partitions over the configured source's span (DESIGN.md: one partition per UTC day)."""

from datetime import timedelta

from dagster import DailyPartitionsDefinition

from orchestration.config import load_settings

_settings = load_settings()

daily_partitions = DailyPartitionsDefinition(
    start_date=_settings.start_date.isoformat(),
    end_date=(_settings.end_date + timedelta(days=1)).isoformat(),  # exclusive
    timezone="UTC",
)
