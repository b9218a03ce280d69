"""Freshness checks on what serving depends on: a champion not re-decided for 2 days, or an
online store not refreshed for 2 days, is overdue (wall-clock time of the last materialization).
The checks run from their sensor (switch it on in the UI, Automation) or by hand."""

import warnings
from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

STALE_AFTER = timedelta(days=2)


def freshness_checks(surfaces: tuple[str, ...]) -> Sequence[dg.AssetChecksDefinition]:
    """The checks on each surface's champion and on the online store."""
    # Dagster marks these builders superseded by FreshnessPolicy; they stay (checks that show in
    # runs and fail with the overdue time) until the policies cover that. The warning is theirs,
    # said once here, not on every load of the code location.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_last_update_freshness_checks(
            assets=[dg.AssetKey([surface, "champion"]) for surface in surfaces] + [dg.AssetKey("online_features")],
            lower_bound_delta=STALE_AFTER,
        )
