"""The feature views, as a function of the deployment's code ledger (events.vocabulary): the
per-outcome and per-surface columns and the views' `pinrec/codes` tag follow the codes.
feature_pipeline.store.apply_repo builds them for the ledger it records; the plain `feast` CLI
applies those of `repo.py` (the ledger codes.json in the folder it runs in)."""

import json
from collections.abc import Mapping
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Array, Float64, Int64

# Features keep their value for years: MovieLens users come back after long gaps, and a
# point-in-time join must still find their history.
LONG_TTL = timedelta(days=3650)


def feature_views(
    codes: Mapping, user: Entity, item: Entity, sources: Mapping[str, FileSource]
) -> dict[str, FeatureView]:
    """The views by name for a code ledger (`codes`: outcome and surface names by code, the item
    count columns they give, the vocabulary's label), on the entities `user` and `item` and the
    offline tables `sources` (data_sources.SOURCES)."""
    tags = {
        "pinrec/codes": json.dumps({"outcomes": codes["outcomes"], "surfaces": codes["surfaces"]}),
        "pinrec/vocabulary": str(codes.get("vocabulary") or ""),
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
        source=sources["user_sequence"],
        tags=tags,
        description="The user's most recent engagements (oldest first), outcome and surface codes of the "
        "pinrec/codes tag (the vocabulary's code ledger), and the items shown to the user in the last days "
        "(seq_shown_item_ids, most recently shown last: the service's freshness filter).",
    )
    item_stats = FeatureView(
        name="item_stats",
        entities=[item],
        ttl=LONG_TTL,
        schema=[Field(name=column, dtype=Int64) for column in codes["item_count_columns"]]
        + [Field(name="engagements", dtype=Int64), Field(name="first_seen_us", dtype=Int64)],
        online=True,
        source=sources["item_stats"],
        tags=tags,
        description="Item popularity by outcome family (one count per family of the code ledger), engagements "
        "and age (first time seen).",
    )
    item_surface_stats = FeatureView(
        name="item_surface_stats",
        entities=[item],
        ttl=LONG_TTL,
        schema=[
            Field(name=f"{surface}_{figure}", dtype=dtype)
            for surface in codes["surfaces"]
            for figure, dtype in (("impressions", Int64), ("engagements", Int64), ("engagement_rate", Float64))
        ],
        online=True,
        source=sources["item_surface_stats"],
        tags=tags,
        description="Per-surface impression statistics of an item, for every surface of the code ledger.",
    )
    return {view.name: view for view in (user_sequence, item_stats, item_surface_stats)}
