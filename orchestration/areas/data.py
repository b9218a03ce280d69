"""Data area: ingestion with quarantine, feature tables, online features; the nightly refresh."""

import dagster as dg

from assets.features import feature_tables, online_features
from assets.ingest import bad_row_fraction, ingest_events
from orchestration.jobs import nightly_refresh, nightly_refresh_schedule

defs = dg.Definitions(
    assets=[ingest_events, feature_tables, online_features],
    asset_checks=[bad_row_fraction],
    jobs=[nightly_refresh],
    schedules=[nightly_refresh_schedule],
)
