from feast import FeatureService
from features import item_stats, item_surface_stats, user_sequence

user_sequence_service = FeatureService(
    name="user_sequence_service",
    features=[user_sequence],
    description="What the retrieval service reads per request: the user's recent engagements.",
)

item_features_service = FeatureService(
    name="item_features_service",
    features=[item_stats, item_surface_stats],
    description="Item popularity and per-surface statistics (logQ correction, canary analysis).",
)
