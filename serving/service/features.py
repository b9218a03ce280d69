"""Where the service reads a user's sequence: the Feast online store (`FeastFeatures`) or a
mapping held in memory (`InMemoryFeatures`, tests and benchmarks); both are `FeatureReader`s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class InMemoryFeatures:
    """A feature reader over a dict ``user_id -> {seq_item_ids: [...], ...}`` (tests, benches)."""

    def __init__(self, rows: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        self.rows = dict(rows or {})

    def read(self, user_id: int) -> Mapping[str, Any] | None:
        return self.rows.get(int(user_id))

    def read_many(self, user_ids: list[int]) -> list[Mapping[str, Any] | None]:
        return [self.rows.get(int(u)) for u in user_ids]


class FeastFeatures:
    """The Feast online store (``user_sequence`` view). Reads the response as a dict of lists
    (``to_dict``), skipping the DataFrame ``feature_pipeline.store.online_user_sequences``
    builds, which costs milliseconds per request."""

    def __init__(self, store: Any) -> None:
        from feature_pipeline.store import USER_SEQUENCE_FEATURES

        self.store = store
        self.features = USER_SEQUENCE_FEATURES

    def read(self, user_id: int) -> Mapping[str, Any] | None:
        return self.read_many([user_id])[0]

    def read_many(self, user_ids: list[int]) -> list[Mapping[str, Any] | None]:
        """Several users in one online-store read (a micro-batch's users)."""
        unique = list(dict.fromkeys(int(u) for u in user_ids))
        data = self.store.get_online_features(
            features=self.features, entity_rows=[{"user_id": u} for u in unique]
        ).to_dict()
        rows = {}
        for i, u in enumerate(unique):
            row = {k: v[i] for k, v in data.items()}
            rows[u] = row if row.get("seq_item_ids") is not None else None
        return [rows[int(u)] for u in user_ids]


# -- request / response models ----------------------------------------------------------------
