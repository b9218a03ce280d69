"""The code location's steps the operator's commands name (`pinrec-ops lifecycle`, `backfill
--data-only`, the live runner). No import of the definitions: the CLI reads these before it sets
the environment they load from."""

# A day's data without the retrain: what nightly_refresh runs before a model exists
DATA_ASSET_KEYS = [
    "events",
    "event_quarantine",
    "serving_log",
    "user_sequence_features",
    "item_stats_features",
    "item_surface_stats_features",
    "online_features",
    "online_metrics",
]
# A surface's steps of the retrain after pretraining, in order
SURFACE_STEPS = ["finetuned_model", "candidate_version", "canary_evaluation", "champion"]
