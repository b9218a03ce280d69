from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float64, Int64

from data_sources import item_stats_source, item_surface_stats_source, user_sequence_source
from entities import item, user

# Features keep their value for years: MovieLens users come back after long gaps, and a
# point-in-time join must still find their history.
LONG_TTL = timedelta(days=3650)

user_sequence = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=LONG_TTL,
    schema=[
        Field(name="seq_item_ids", dtype=Array(Int64)),
        Field(name="seq_outcomes", dtype=Array(Int64)),
        Field(name="seq_surfaces", dtype=Array(Int64)),
        Field(name="seq_timestamps_us", dtype=Array(Int64)),
        Field(name="seq_length", dtype=Int64),
    ],
    online=True,
    source=user_sequence_source,
    description="The user's most recent engagements (oldest first), codes from events.contract.",
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=LONG_TTL,
    schema=[
        Field(name="impressions", dtype=Int64),
        Field(name="clicks", dtype=Int64),
        Field(name="saves", dtype=Int64),
        Field(name="hides", dtype=Int64),
        Field(name="ratings", dtype=Int64),
        Field(name="engagements", dtype=Int64),
        Field(name="first_seen_us", dtype=Int64),
    ],
    online=True,
    source=item_stats_source,
    description="Item popularity by outcome and age (first time seen).",
)

item_surface_stats = FeatureView(
    name="item_surface_stats",
    entities=[item],
    ttl=LONG_TTL,
    schema=[
        Field(name="homefeed_impressions", dtype=Int64),
        Field(name="homefeed_engagements", dtype=Int64),
        Field(name="homefeed_engagement_rate", dtype=Float64),
        Field(name="search_impressions", dtype=Int64),
        Field(name="search_engagements", dtype=Int64),
        Field(name="search_engagement_rate", dtype=Float64),
        Field(name="related_impressions", dtype=Int64),
        Field(name="related_engagements", dtype=Int64),
        Field(name="related_engagement_rate", dtype=Float64),
    ],
    online=True,
    source=item_surface_stats_source,
    description="Per-surface impression statistics of an item.",
)
