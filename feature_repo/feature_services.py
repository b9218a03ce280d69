"""The feature services over the views of features.feature_views."""

from collections.abc import Mapping

from feast import FeatureService, FeatureView


def feature_services(views: Mapping[str, FeatureView]) -> dict[str, FeatureService]:
    user_sequence_service = FeatureService(
        name="user_sequence_service",
        features=[views["user_sequence"]],
        description="What the retrieval service reads per request: the user's recent engagements.",
    )
    item_features_service = FeatureService(
        name="item_features_service",
        features=[views["item_stats"], views["item_surface_stats"]],
        description="Item popularity and per-surface statistics (logQ correction, canary analysis).",
    )
    return {service.name: service for service in (user_sequence_service, item_features_service)}
