"""The day a run computes: its day partition."""

from datetime import date


def partition_day(context) -> date:
    """The day partition of a run (an asset or check context). Every partitioned asset here
    computes exactly one day per run (backfills run one per day), so a range is an error."""
    return date.fromisoformat(context.partition_key)
