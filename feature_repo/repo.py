"""What the plain `feast` CLI applies when it runs in this folder (`feast apply`): the views and
services of the code ledger codes.json beside it (write it with
feature_pipeline.store.record_feature_codes). The project never imports this file:
feature_pipeline.store.apply_repo builds the same objects for the ledger it records."""

import json
from pathlib import Path

from data_sources import SOURCES
from entities import item, user
from feature_services import feature_services
from features import feature_views

VIEWS = feature_views(json.loads(Path("codes.json").read_text()), user, item, SOURCES)
SERVICES = feature_services(VIEWS)
user_sequence, item_stats, item_surface_stats = (VIEWS[name] for name in SOURCES)
user_sequence_service, item_features_service = SERVICES.values()
