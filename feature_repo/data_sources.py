"""Offline feature tables: parquet files written per day partition by the feature assets.

Paths are relative to the Feast data directory (the repo_path the project configures).
"""

from feast import FileSource

user_sequence_source = FileSource(
    name="user_sequence_source",
    path="offline/user_sequence",
    timestamp_field="event_timestamp",
    description="Per user and day: the last 200 engagements up to that day's last one.",
)

item_stats_source = FileSource(
    name="item_stats_source",
    path="offline/item_stats",
    timestamp_field="event_timestamp",
    description="Per item and day: cumulative counts by outcome up to that day's last event.",
)

item_surface_stats_source = FileSource(
    name="item_surface_stats_source",
    path="offline/item_surface_stats",
    timestamp_field="event_timestamp",
    description="Per item and day: cumulative impressions and engagements on each surface.",
)

# By the feature view that reads each (features.feature_views)
SOURCES = {
    "user_sequence": user_sequence_source,
    "item_stats": item_stats_source,
    "item_surface_stats": item_surface_stats_source,
}
