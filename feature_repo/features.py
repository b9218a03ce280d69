import json
import os
from datetime import timedelta
from pathlib import Path

from data_sources import item_stats_source, item_surface_stats_source, user_sequence_source
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64

# Features keep their value for years: MovieLens users come back after long gaps, and a
# point-in-time join must still find their history.
LONG_TTL = timedelta(days=3650)

# The deployment's code ledger (events.vocabulary): outcome and surface names by code, and the
# item count columns they give. feature_pipeline.store.apply_repo records it in the Feast data
# directory and points PINREC_FEAST_CODES at it; the plain `feast` CLI reads codes.json from the
# folder it runs in (write it with feature_pipeline.store.record_feature_codes).
CODES = json.loads(Path(os.environ.get("PINREC_FEAST_CODES", "codes.json")).read_text())
TAGS = {
    "pinrec/codes": json.dumps({"outcomes": CODES["outcomes"], "surfaces": CODES["surfaces"]}),
    "pinrec/vocabulary": str(CODES.get("vocabulary") or ""),
}

user_sequence = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=LONG_TTL,
    schema=[
        Field(name="seq_item_ids", dtype=Array(Int64)),
        Field(name="seq_outcomes", dtype=Array(Int64)),
        Field(name="seq_surfaces", dtype=Array(Int64)),
        Field(name="seq_timestamps_us", dtype=Array(Int64)),
        Field(name="seq_shown_item_ids", dtype=Array(Int64)),
        Field(name="seq_length", dtype=Int64),
    ],
    online=True,
    source=user_sequence_source,
    tags=TAGS,
    description="The user's most recent engagements (oldest first), outcome and surface codes of the "
    "pinrec/codes tag (the vocabulary's code ledger), and the items shown to the user in the last days "
    "(seq_shown_item_ids, most recently shown last: the service's freshness filter).",
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=LONG_TTL,
    schema=[Field(name=column, dtype=Int64) for column in CODES["item_count_columns"]]
    + [Field(name="engagements", dtype=Int64), Field(name="first_seen_us", dtype=Int64)],
    online=True,
    source=item_stats_source,
    tags=TAGS,
    description="Item popularity by outcome family (one count per family of the code ledger), engagements "
    "and age (first time seen).",
)

item_surface_stats = FeatureView(
    name="item_surface_stats",
    entities=[item],
    ttl=LONG_TTL,
    schema=[
        Field(name=f"{surface}_{figure}", dtype=dtype)
        for surface in CODES["surfaces"]
        for figure, dtype in (("impressions", Int64), ("engagements", Int64), ("engagement_rate", Float64))
    ],
    online=True,
    source=item_surface_stats_source,
    tags=TAGS,
    description="Per-surface impression statistics of an item, for every surface of the code ledger.",
)
